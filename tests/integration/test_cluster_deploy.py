"""A real multi-node Ray cluster on this machine, driven only through Ray's CLI.

Three nodes (`ray.cluster_utils.Cluster`: a head and two workers, each its own raylet with its own
custom resources). The index job goes in with `ray job submit`, the app with `serve deploy`; the
state API (through the dashboard) says where actors ran. Then a worker hosting a retriever replica
is killed: the app keeps answering from the other replica, Serve reschedules the lost one, and the
index, on a root every node reads, is intact. Everything started here is stopped here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from ray.util.state import list_actors

from indexes.layout import IndexDirectory
from tests.conftest import REPO, SAMPLE_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent
QUESTION = {"query": "How are deployments scaled?", "index": "test"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, cwd=REPO)


class ClusterHost:
    """The cluster's owner process (tests/integration/cluster_host.py) and what it reported."""

    def __init__(self, spec: dict) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.integration.cluster_host", json.dumps(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                        start_new_session=True)  # fmt: skip
        ready = json.loads(self._read("{"))
        self.head, self.workers = ready["head"], ready["workers"]

    def kill(self, name: str) -> None:
        self.process.stdin.write(f"kill {name}\n")
        self.process.stdin.flush()
        self._read("ok")

    def _read(self, prefix: str) -> str:
        """The host's next protocol line (anything else a library prints is skipped)."""
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"the cluster host exited (code {self.process.wait()}) before answering")

    def stop(self) -> None:
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        self.process.wait(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """head {head_node, retrieval_node}, embed worker {embed_node, retrieval_node}, parse worker
    {parse_node, retrieval_node}: every node may host a retriever, only one may embed or parse."""
    dashboard = free_port()
    # Its own agent port: the session's single-node Ray (other tests) already holds the default one.
    head = {"num_cpus": 2, "resources": {"head_node": 1, "retrieval_node": 1},
            "dashboard_port": dashboard, "dashboard_agent_listen_port": free_port()}  # fmt: skip
    workers = {"embed": {"num_cpus": 2, "resources": {"embed_node": 1, "retrieval_node": 1}},
               "parse": {"num_cpus": 2, "resources": {"parse_node": 2, "retrieval_node": 1}}}  # fmt: skip
    host = ClusterHost({"head": head, "workers": workers})
    address = f"http://127.0.0.1:{dashboard}"
    try:
        yield {"host": host, "address": address, "head": host.head, "workers": host.workers,
               "root": tmp_path_factory.mktemp("shared") / "indexes", "port": free_port()}  # fmt: skip
    finally:
        cli("serve", "shutdown", "-y", "-a", address, timeout=120)
        host.stop()


def submit_index_job(cluster, *overrides: str) -> subprocess.CompletedProcess:
    sets = [f"indexes.root={cluster['root']}", "index_job.name=test", "index_job.parse.concurrency=1", *overrides]
    command = [sys.executable, "-m", "rayrag", "index", "--source", str(SAMPLE_DIR)]
    command += [arg for s in sets for arg in ("--set", s)]
    return cli("ray", "job", "submit", "--address", cluster["address"], "--working-dir", str(REPO), "--", *command)


def serve_file(cluster, path: Path, **sets) -> Path:
    """A `serve deploy` file for the test app: extractive answers, replicas pinned by resources."""
    args = {
        "indexes.root": str(cluster["root"]), "serve.retriever.indexes": ["test"],
        "serve.retriever.placement": "deployment",  # replicas of their own, pinned to the retrieval nodes
        "serve.retriever.deployment": {"num_cpus": 0, "resources": {"retrieval_node": 1},
                                 "autoscaling": {"min_replicas": 2, "max_replicas": 2}},
        "serve.gateway.deployment": {"num_cpus": 0, "resources": {"head_node": 0.1}},
        "serve.gateway.prompts_dir": str(REPO / "configs" / "prompts"),
        "serve.gateway.records.enabled": False, "serve.gateway.history.enabled": False,
        "serve.gateway.telemetry.tracing": False, "serve.router.chain": [{"backend": "extractive"}],
        "serve.router.deployment": {"num_cpus": 0, "resources": {"head_node": 0.1}},  # single replicas stay on the head
        "serve.primary": None, "serve.fallback": None,
    } | sets  # fmt: skip
    app = {"name": "rayrag", "route_prefix": "/", "import_path": "serving.app:build_app",
           "args": {"config": str(REPO / "configs" / "default.yaml"), "set": args}}  # fmt: skip
    body = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": cluster["port"]},
            "applications": [app]}  # fmt: skip
    path.write_text(yaml.safe_dump(body))
    return path


def deploy_and_wait(cluster, path: Path, timeout_s: float = 300) -> dict:
    """`serve deploy`, then `serve status` until the app is RUNNING or DEPLOY_FAILED."""
    deployed = cli("serve", "deploy", str(path), "-a", cluster["address"], timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = yaml.safe_load(cli("serve", "status", "-a", cluster["address"], timeout=60).stdout) or {}
        app = (status.get("applications") or {}).get("rayrag") or {}
        if app.get("status") in ("RUNNING", "DEPLOY_FAILED"):
            return app
        time.sleep(2)
    raise AssertionError(f"app not settled after {timeout_s}s: {app}")


def actors_on_nodes(cluster, class_fragment: str, state: str = "ALIVE") -> list[str]:
    actors = list_actors(address=cluster["address"], filters=[("state", "=", state)], limit=1000, detail=True)
    return [a.node_id for a in actors if class_fragment in a.class_name]


def ask(cluster, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{cluster['port']}/v1/query", json=QUESTION, timeout=timeout)


def test_index_job_runs_on_the_cluster_with_stages_on_their_nodes(cluster):
    bad = submit_index_job(cluster, "index_job.embed.resources={gpu_node: 1}")
    assert bad.returncode != 0 and "gpu_node" in bad.stdout + bad.stderr  # refused before any work

    done = submit_index_job(
        cluster, "index_job.parse.resources={parse_node: 1}", "index_job.embed.resources={embed_node: 1}"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert IndexDirectory(cluster["root"], "test").current_version() is not None
    workers = cluster["workers"]
    assert set(actors_on_nodes(cluster, "ChunkEmbedder", "DEAD")) == {workers["embed"]}
    assert set(actors_on_nodes(cluster, "DocumentProcessor", "DEAD")) == {workers["parse"]}


def test_bad_deploys_fail_before_any_replica_starts(cluster, tmp_path):
    no_such = serve_file(cluster, tmp_path / "a.yaml", **{"serve.retriever.deployment.resources": {"gpu_node": 1}})
    app = deploy_and_wait(cluster, no_such)
    assert app["status"] == "DEPLOY_FAILED" and "gpu_node" in app["message"], app
    assert not actors_on_nodes(cluster, "ServeReplica:rayrag")

    unreadable = serve_file(cluster, tmp_path / "b.yaml", **{"indexes.root": str(tmp_path / "nowhere")})
    app = deploy_and_wait(cluster, unreadable)
    assert app["status"] == "DEPLOY_FAILED" and "cannot read index 'test'" in app["message"], app
    assert not actors_on_nodes(cluster, "ServeReplica:rayrag")


def test_serve_deploy_places_replicas_and_survives_losing_a_worker(cluster, tmp_path):
    app = deploy_and_wait(cluster, serve_file(cluster, tmp_path / "serve.yaml"))
    assert app["status"] == "RUNNING", app
    first = ask(cluster)
    assert first.status_code == 200 and first.json()["citations"], first.text
    retrievers = actors_on_nodes(cluster, "ServeReplica:rayrag:retriever")
    assert len(set(retrievers)) == 2  # one per node: each node offers one retrieval_node
    assert set(actors_on_nodes(cluster, "ServeReplica:rayrag:gateway")) == {cluster["head"]}
    assert set(actors_on_nodes(cluster, "ServeReplica:rayrag:router")) == {cluster["head"]}

    victim = next(name for name, node in cluster["workers"].items() if node in retrievers)
    version = IndexDirectory(cluster["root"], "test").current_version()
    cluster["host"].kill(victim)
    # The window starts at the kill and lasts until the lost replica is running again elsewhere:
    # every query in it must be answered (by the surviving replica), none may fail or hang.
    answers, stop = [], threading.Event()
    poller = threading.Thread(target=_poll, args=(cluster, answers, stop), daemon=True)
    poller.start()
    try:
        moved = _wait_for(lambda: _rescheduled(cluster, cluster["workers"][victim]), 180)
    finally:
        stop.set()
        poller.join(60)
    assert moved, "the lost retriever replica was not rescheduled"
    failed = [code for code in answers if code != 200]
    assert answers and not failed, f"{len(failed)} of {len(answers)} queries failed while a node was lost: {failed[:5]}"
    after = ask(cluster)
    assert after.status_code == 200
    assert [c["source"] for c in after.json()["citations"]] == [c["source"] for c in first.json()["citations"]]
    assert IndexDirectory(cluster["root"], "test").current_version() == version


def _poll(cluster, answers: list[int], stop: threading.Event) -> None:
    """Back-to-back queries until told to stop. A hung one counts as failed (0); a slow answer does not:
    on 2 shared cores a query may wait while the lost replica's successor loads its model."""
    while not stop.is_set():
        try:
            answers.append(ask(cluster, timeout=60).status_code)
        except httpx.HTTPError:
            answers.append(0)


def _rescheduled(cluster, dead_node: str) -> bool:
    alive = actors_on_nodes(cluster, "ServeReplica:rayrag:retriever")
    return len(alive) == 2 and dead_node not in alive


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(2)
    return False
