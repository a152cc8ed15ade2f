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
    assert config.indexes.embedder.model == "all-MiniLM-L6-v2" and config.index_job.backend.kind == "faiss"


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"index_job\.embed\.batchsize: unknown key"):
        load_config(write(tmp_path, "index_job:\n  embed:\n    batchsize: 3\n"))


def test_wrong_type_is_named_with_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"index_job\.embed\.batch_size: .*integer.*'lots'"):
        load_config(write(tmp_path, "index_job:\n  embed:\n    batch_size: lots\n"))


def test_missing_model_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"indexes\.embedder\.model: .*'no-such-model' not found"):
        load_config(write(tmp_path, "indexes:\n  embedder:\n    model: no-such-model\n"))


def test_backend_keys_are_checked_per_backend(tmp_path):
    with pytest.raises(ConfigError, match=r"index_job\.backend\.qdrant\.index_type: unknown key"):
        load_config(None, ["index_job.backend={kind: qdrant, index_type: hnsw}"])


def test_overlap_must_be_below_size(tmp_path):
    with pytest.raises(ConfigError, match=r"index_job\.chunker: .*overlap \(200\) must be smaller than size \(100\)"):
        load_config(None, ["index_job.chunker={size: 100, overlap: 200}"])


def test_token_chunks_must_fit_the_embedder(tmp_path):
    told = r"index_job.chunker.size \(400 tokens\) exceeds indexes.embedder.max_seq_length \(256\)"
    with pytest.raises(ConfigError, match=told):
        load_config(None, ["index_job.chunker={unit: tokens, size: 400, overlap: 10}"])


def test_overrides_are_validated_like_the_file(tmp_path):
    config = load_config(
        write(tmp_path, "index_job:\n  embed:\n    batch_size: 8\n"),
        ["index_job.embed.batch_size=32", "index_job.backend.index_type=hnsw"],
    )
    assert config.index_job.embed.batch_size == 32 and config.index_job.backend.index_type == "hnsw"
    with pytest.raises(ConfigError, match=r"index_job\.embed\.concurrency: .*greater than 0"):
        load_config(None, ["index_job.embed.concurrency=0"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, ["index_job.embed.batch_size"])


def test_bad_index_name_and_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"index_job\.name: .*must be 1-64 letters"):
        load_config(None, updates={"index_job.name": "../escape"})
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "index_job: [unclosed\n"))


def test_cli_falls_back_to_defaults_only_for_the_default_config_path(tmp_path, monkeypatch):
    from rayrag.options import DEFAULT_CONFIG
    from rayrag.options import config_path as _config_path

    monkeypatch.chdir(tmp_path)
    assert _config_path(DEFAULT_CONFIG) is None
    assert _config_path(tmp_path / "mine.yaml") == tmp_path / "mine.yaml"  # missing: load_config names it


OLD_LAYOUT = """
index: {name: docs, root: data/indexes}
embedder: {model: all-MiniLM-L6-v2}
chunker: {size: 600}
serve:
  retriever: {root: data/indexes, indexes: [docs]}
"""


def test_a_file_in_the_old_layout_is_told_what_moved_where(tmp_path):
    with pytest.raises(ConfigError, match="old layout") as caught:
        load_config(write(tmp_path, OLD_LAYOUT))
    told = str(caught.value)
    for line in ("index.root: moved to indexes.root", "embedder: moved to indexes.embedder",
                 "chunker: moved to index_job.chunker", "serve.retriever.root: moved to indexes.root"):  # fmt: skip
        assert line in told
    with pytest.raises(ConfigError, match=r"override 'backend\.kind': backend moved to index_job\.backend"):
        load_config(None, ["backend.kind=qdrant"])


def test_an_index_job_without_a_config_file_runs_as_the_shipped_default():
    """The library's defaults (tests, `rayrag` where configs/default.yaml is absent) build indexes as
    `make run` does: one parse actor beside one embed actor, not a second that only adds its start."""
    shipped, bare = load_config(REPO / "configs" / "default.yaml").index_job, load_config(None).index_job
    assert bare.model_dump(exclude={"source"}) == shipped.model_dump(exclude={"source"})
    assert bare.parse.concurrency == 1


def test_one_root_and_one_embedder_for_the_job_the_retriever_and_evaluation():
    config = load_config(None, ["indexes.root=/srv/idx", "indexes.embedder.max_seq_length=128"])
    serving, evaluation = config.serving(), config.evaluation()
    assert serving.indexes == evaluation.indexes == config.indexes
    assert serving.indexes.root == "/srv/idx" and serving.indexes.embedder.max_seq_length == 128


def test_every_relative_path_of_every_section_is_anchored_and_uris_are_not(tmp_path):
    """No list of path fields to keep up to date: the retriever's cache_dir and reranker model, the
    gateway's stores and prompts, the job's staging and evaluation's directories all follow `base`."""
    config = load_config(
        None,
        ["serve.retriever.cache_dir=cache", "serve.retriever.reranker={model: models/ce}", "indexes.root=idx"],
        base=tmp_path,
    )
    assert config.indexes.root == str(tmp_path / "idx")
    assert config.serve.retriever.cache_dir == tmp_path / "cache"
    assert config.serve.retriever.reranker.model == tmp_path / "models" / "ce"
    assert config.serve.gateway.prompts_dir == tmp_path / "configs" / "prompts"
    assert config.serve.gateway.records.path == tmp_path / ".rayrag" / "records.sqlite"
    assert config.index_job.staging_dir == tmp_path / ".rayrag" / "staging"
    assert config.eval.workdir == tmp_path / ".rayrag" / "eval" / "indexes"
    assert config.indexes.embedder.model == "all-MiniLM-L6-v2"  # a packaged name, not a path
    remote = load_config(None, ["indexes.root=s3://bucket/indexes"], base=tmp_path)
    assert remote.indexes.root == "s3://bucket/indexes"


def test_the_cli_and_the_serving_builder_load_the_same_settings(monkeypatch):
    from serving.app import load_serving

    monkeypatch.chdir(REPO)
    overrides = {"serve.gateway.port": 8123, "indexes.root": "elsewhere"}
    from_cli = load_config(REPO / "configs" / "default.yaml", updates=overrides).serving()
    assert load_serving({"config": "configs/default.yaml", "set": overrides}) == from_cli


def test_an_openai_judge_needs_its_endpoint_when_loaded_not_when_run():
    with pytest.raises(ConfigError, match=r"eval\.answers\.judge: .*base_url is required when kind is openai"):
        load_config(None, ["eval.answers.judge.kind=openai"])
    judged = load_config(None, ["eval.answers.judge={kind: openai, base_url: 'http://127.0.0.1:8000/v1'}"])
    assert judged.eval.answers.judge.base_url == "http://127.0.0.1:8000/v1"
