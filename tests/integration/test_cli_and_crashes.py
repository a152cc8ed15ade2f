"""The `rayrag` command as users run it: status, bad config, a concurrent job, a job killed half-way,
`rayrag run`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from indexes.layout import IndexDirectory
from rayrag.cli import app
from tests.conftest import REPO, write_corpus
from tests.integration.conftest import assert_consistent, job_config, ray_env, run_job
from tests.integration.test_index_job import DOCS

pytestmark = pytest.mark.integration
RAYRAG = [sys.executable, "-m", "rayrag"]


def config_file(tmp_path: Path, **sections) -> Path:
    settings = {"indexes": {"root": str(tmp_path / "indexes")}, "index_job": {"name": "test"}} | sections
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def rayrag(args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(RAYRAG + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, **kwargs)


def test_cli_builds_then_status_shows_versions_counts_spec_and_report(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = config_file(tmp_path)
    built = rayrag(["index", "--config", str(config), "--source", str(corpus), "--index", "cli"], ray_env(ray_cluster))
    assert built.returncode == 0, built.stderr[-2000:]
    assert "index 'cli' version" in built.stdout
    assert "documents: 3 listed, 3 parsed, 0 unchanged, 0 skipped, 0 deleted" in built.stdout
    assert "chunks/s" in built.stdout
    assert not (tmp_path / "indexes" / "test").exists()  # --index overrides the config's index_job.name

    status = CliRunner().invoke(app, ["index", "status", "cli", "--config", str(config)])
    assert status.exit_code == 0, status.output
    version = IndexDirectory(tmp_path / "indexes", "cli").current_version()
    assert f"* {version}" in status.output and "documents: 3" in status.output
    assert "embedder: all-MiniLM-L6-v2 dim=384 normalize=True max_seq_length=256" in status.output
    assert "full rebuild: first version of this index" in status.output
    as_json = json.loads(CliRunner().invoke(app, ["index", "status", "cli", "--config", str(config), "--json"]).output)
    assert as_json["current"] == version and as_json["embedder"]["dim"] == 384
    assert as_json["report"]["documents"]["parsed"] == 3


def test_invalid_config_fails_before_any_work_and_names_the_key(tmp_path):
    config = config_file(
        tmp_path,
        indexes={"root": str(tmp_path / "indexes"), "embedder": {"model": "missing-model"}},
        index_job={"name": "test", "embed": {"batch_sise": 8}},
    )
    done = rayrag(["index", "--config", str(config), "--source", str(tmp_path)], os.environ.copy())
    assert done.returncode == 2
    assert "index_job.embed.batch_sise: unknown key" in done.stderr
    assert "indexes.embedder.model: Value error, model 'missing-model' not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "indexes").exists()


def test_second_concurrent_job_fails_fast_and_corrupts_nothing(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = job_config(tmp_path)
    good = run_job(config, corpus).version
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
            "from indexes.layout import IndexDirectory\n"
            f"with IndexDirectory({str(config.indexes.root)!r}, 'test').writer_lock():\n"
            "    print('locked', flush=True); time.sleep(120)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = rayrag(["index", "--config", str(config_file(tmp_path)), "--source", str(corpus)], ray_env(ray_cluster))
        assert done.returncode == 2
        assert "error: index 'test' is being written by another job" in done.stderr
        # it failed at the lock, before building anything: no version was begun
        assert not list(IndexDirectory(config.indexes.root, "test").versions_path.glob("*.partial"))
    finally:
        holder.kill()
        holder.wait()
    assert IndexDirectory(config.indexes.root, "test").current_version() == good
    assert_consistent(config)


def test_job_killed_half_way_leaves_current_and_the_next_run_completes(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = job_config(tmp_path)
    good = run_job(config, corpus).version
    (corpus / "sql.md").write_text("# SQLite\n\n" + "Transactions in sqlite3 are committed with commit(). " * 12)
    directory = IndexDirectory(config.indexes.root, "test")

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    job = subprocess.Popen(
        [*RAYRAG, "index", "--config", str(config_file(tmp_path)), "--source", str(corpus)],
        env=ray_env(ray_cluster) | {"RAYRAG_JOB_CHECKPOINTS": str(checkpoints)}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # waits for the job's own signal that it is writing, not a guess
    while not (checkpoints / "writing").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # killed while writing the new version
    job.wait()
    assert list(directory.versions_path.glob("*.partial")), "the job was killed while writing its version"
    assert directory.current_version() == good
    assert_consistent(config)

    resumed = run_job(config, corpus)
    assert resumed.parent_version == good and resumed.documents.parsed == 1
    assert not list(directory.versions_path.glob("*.partial"))
    assert directory.current_version() == resumed.version
    assert_consistent(config)


def test_serve_names_an_index_that_was_never_built(tmp_path):
    done = rayrag(
        ["serve", "--set", f"indexes.root={tmp_path}", "--set", "serve.retriever.indexes=[nope]"],
        os.environ.copy(),
    )
    assert (
        done.returncode == 2
        and "index 'nope' has no published version" in done.stderr
        and "rayrag index" in done.stderr
    )


def test_query_without_a_running_app_says_so(tmp_path):
    done = rayrag(["query", "hello", "--url", "http://127.0.0.1:9"], os.environ.copy())
    assert done.returncode == 2 and "cannot reach http://127.0.0.1:9" in done.stderr


def test_serve_drains_on_sigterm_like_ctrl_c(ray_cluster, tmp_path):
    """systemd, Kubernetes and `docker stop` send SIGTERM: the app is shut down and the command ends
    cleanly, instead of dying in Ray's native handler with a stack dump."""
    from tests.integration.serving_support import free_port

    config = job_config(tmp_path)
    run_job(config, write_corpus(tmp_path / "corpus", {"tides.md": "# Tides\n\nTides rise and fall with the Moon.\n"}))
    port = free_port()
    sets = [f"indexes.root={config.indexes.root}", "serve.retriever.indexes=[test]", f"serve.gateway.port={port}",
            "serve.primary=null", "serve.fallback=null", "serve.router.chain=[{backend: extractive}]",
            "serve.gateway.records.enabled=false", f"serve.gateway.history.path={tmp_path / 'history.sqlite'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, like a user's shell
    server = subprocess.Popen([*RAYRAG, "serve", *(a for s in sets for a in ("--set", s))], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in server.stdout:
            if "stops it" in line:
                break
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=180)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err[-2000:]
    assert "stopped" in out and "SIGTERM received" not in err


def test_run_indexes_then_serves_on_one_ray_instance(tmp_path):
    """`rayrag run` (what `make run` does) builds the index, then answers from it, and both happen on
    one Ray instance: a second start and stop was 5-10 s of a first `make run`. The Ray temp dir is
    the test's own, so its sessions are counted, not anyone else's."""
    import httpx

    from tests.integration.serving_support import free_port

    corpus = write_corpus(tmp_path / "corpus", {"tides.md": "# Tides\n\nTides rise and fall with the Moon.\n"})
    port, ray_tmp = free_port(), Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # short: Ray's socket paths
    sets = [f"indexes.root={tmp_path / 'indexes'}", "index_job.name=test", "serve.retriever.indexes=[test]",
            f"serve.gateway.port={port}", "serve.primary=null", "serve.fallback=null",
            "serve.router.chain=[{backend: extractive}]", "serve.gateway.records.enabled=false", f"serve.gateway.history.path={tmp_path / 'history.sqlite'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    command = [*RAYRAG, "run", "--source", str(corpus), *(a for s in sets for a in ("--set", s))]
    server = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in server.stdout:
            said.append(line)
            if "stops it" in line:
                break
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/query", json={"query": "What moves the tides?", "index": "test"}, timeout=60
        )
        sessions = sorted(p.name for p in ray_tmp.rglob("session_2*") if p.is_dir())
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=180)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert server.returncode == 0, err[-2000:]
    assert "chunks: 1 added" in "".join(said) and "rayrag is serving" in "".join(said)
    assert answer.status_code == 200 and "tides.md" in answer.text and "Moon" in answer.text, answer.text
    assert len(sessions) == 1, sessions  # the job and the app on one Ray instance
    assert "stopped" in out
