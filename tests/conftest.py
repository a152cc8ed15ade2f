"""Shared fixtures. The Ray-backed ones live in tests/integration/conftest.py."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

from core.offline import ensure_offline

ensure_offline()

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE_DIR


def write_corpus(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create a small corpus of text files (str) or raw bytes."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (from apt) on a free port, without persistence."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):  # in CI a missing service is a failure: the tests it backs would not run
            pytest.fail("redis-server is not installed: CI must install it (apt-get install redis-server)")
        pytest.skip("redis-server not installed: apt-get install redis-server to run these tests")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)


class Posted(NamedTuple):
    path: str
    content_type: str
    body: bytes


@pytest.fixture
def post_sink():
    """A local HTTP server that records every POST (a webhook receiver, an OTLP collector);
    yields its base URL and the list of what it received."""
    received: list[Posted] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(Posted(self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
