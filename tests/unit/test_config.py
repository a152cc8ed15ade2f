from __future__ import annotations

import pytest

from rayrag.config import ConfigError, RootConfig, load_config
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_the_shipped_default_config_loads():
    config = load_config(REPO / "configs" / "default.yaml")
    assert isinstance(config, RootConfig)
    assert config.embedder.model == "all-MiniLM-L6-v2" and config.backend.kind == "faiss"


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"embed\.batchsize: unknown key"):
        load_config(write(tmp_path, "embed:\n  batchsize: 3\n"))


def test_wrong_type_is_named_with_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"embed\.batch_size: .*integer.*'lots'"):
        load_config(write(tmp_path, "embed:\n  batch_size: lots\n"))


def test_missing_model_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"embedder\.model: .*'no-such-model' not found"):
        load_config(write(tmp_path, "embedder:\n  model: no-such-model\n"))


def test_backend_keys_are_checked_per_backend(tmp_path):
    with pytest.raises(ConfigError, match=r"backend\.qdrant\.index_type: unknown key"):
        load_config(write(tmp_path, "backend:\n  kind: qdrant\n  index_type: hnsw\n"))


def test_overlap_must_be_below_size(tmp_path):
    with pytest.raises(ConfigError, match=r"chunker: .*overlap \(200\) must be smaller than size \(100\)"):
        load_config(write(tmp_path, "chunker:\n  size: 100\n  overlap: 200\n"))


def test_token_chunks_must_fit_the_embedder(tmp_path):
    with pytest.raises(ConfigError, match=r"chunker.size \(400 tokens\) exceeds embedder.max_seq_length \(256\)"):
        load_config(write(tmp_path, "chunker:\n  unit: tokens\n  size: 400\n  overlap: 10\n"))


def test_overrides_are_validated_like_the_file(tmp_path):
    config = load_config(
        write(tmp_path, "embed:\n  batch_size: 8\n"), ["embed.batch_size=32", "backend.index_type=hnsw"]
    )
    assert config.embed.batch_size == 32 and config.backend.index_type == "hnsw"
    with pytest.raises(ConfigError, match=r"embed\.concurrency: .*greater than 0"):
        load_config(None, ["embed.concurrency=0"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, ["embed.batch_size"])


def test_bad_index_name_and_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"index\.name: .*must be 1-64 letters"):
        load_config(None, updates={"index.name": "../escape"})
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "embed: [unclosed\n"))


def test_cli_falls_back_to_defaults_only_for_the_default_config_path(tmp_path, monkeypatch):
    from rayrag.options import DEFAULT_CONFIG
    from rayrag.options import config_path as _config_path

    monkeypatch.chdir(tmp_path)
    assert _config_path(DEFAULT_CONFIG) is None
    assert _config_path(tmp_path / "mine.yaml") == tmp_path / "mine.yaml"  # missing: load_config names it
