"""Fixtures the embedder's unit tests share: one OpenVINO conversion per session, into a cache of its own."""

from __future__ import annotations

import pytest

from indexes.embedder import EmbedderConfig, load_embedder


def openvino_config(cache_dir, **updates) -> EmbedderConfig:
    return EmbedderConfig(backend="openvino", openvino={"cache_dir": str(cache_dir)}, **updates)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A cache converted into once (the user's own cache is left alone): the first load converts
    through sentence-transformers, and later loads of the packaged model start from it."""
    path = tmp_path_factory.mktemp("openvino-cache")
    first = load_embedder(openvino_config(path))
    assert first.backend == "openvino" and first.model is not None  # converted by the full load
    return path


@pytest.fixture(scope="session")
def torch_embedder():
    return load_embedder(EmbedderConfig(backend="torch"))
