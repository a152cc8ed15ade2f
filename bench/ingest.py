"""Documents over HTTP against the CLI, in one run (issue 21): `ingest_to_searchable_s` is the seconds
from the first upload to every file `completed` (its document in the version the retriever serves)
through the running app: `/v1/files` for each file of the bundled sample, one vector-store file batch
(the gateway submits `rayrag index` through Ray's job API), then the retriever's hot reload.
`cli_index_s` is `rayrag index` on the same files in a subprocess, what an operator with a shell
runs (its own Ray start included). `ingest_vs_cli` is their ratio: what the HTTP path adds is the
uploads, the job submission and the reload.

    python bench/ingest.py [--port 8767]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Timer, record
from bench.serving import QUERIES, answered_by, build_sample_index, serve_run, serve_yaml, wait
from pipelines.corpus import SAMPLE_DIR

INDEX = "bench"


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLE_DIR.rglob("*") if p.is_file() and p.name != "LICENSES.md")


def over_http(url: str, files: list[Path], timeout_s: float = 900) -> float:
    """Upload, add as one batch, wait until every file is completed; seconds from the first upload."""
    http = httpx.Client(base_url=url, timeout=120)
    with Timer() as took:
        ids = []
        for path in files:
            reply = http.post(
                "/v1/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "assistants"}
            )
            ids.append(reply.raise_for_status().json()["id"])
        http.post(f"/v1/vector_stores/vs_{INDEX}/file_batches", json={"file_ids": ids}).raise_for_status()
        deadline = time.monotonic() + timeout_s
        while True:
            listed = http.get(f"/v1/vector_stores/vs_{INDEX}/files").raise_for_status().json()["data"]
            states = {f["id"]: f["status"] for f in listed}
            if all(states.get(i) in ("completed", "failed") for i in ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"files never completed: {states}")
            time.sleep(0.5)
    failed = [i for i in ids if states[i] == "failed"]
    if failed:
        raise RuntimeError(f"the job refused {failed}")
    return took.seconds


def with_cli(root: Path, files: list[Path], workdir: Path) -> float:
    source = workdir / "cli-source"
    source.mkdir(exist_ok=True)
    for path in files:
        shutil.copy(path, source / path.name)
    command = [sys.executable, "-m", "rayrag", "index", "--source", str(source), "--index", "cli",
               "--set", f"indexes.root={root}"]  # fmt: skip
    with Timer() as took:
        subprocess.run(command, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return took.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    url, files = f"http://127.0.0.1:{args.port}", sample_files()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "indexes"
        build_sample_index(root)
        extra = {"serve.gateway.ingest": {"enabled": True, "root": str(Path(tmp) / "ingest")}}
        config = serve_yaml(Path(tmp) / "serve.yaml", root, INDEX, args.port, primary=False, extra=extra)
        with serve_run(config):
            wait(lambda: answered_by(url, {"query": QUERIES[0], "index": INDEX, "max_tokens": 8}) is not None)
            http_s = over_http(url, files)
        cli_s = with_cli(root, files, Path(tmp))
    values = {"ingest_to_searchable_s": http_s, "cli_index_s": cli_s, "ingest_vs_cli": http_s / cli_s,
              "ingest_files": len(files), "ingest_bytes": sum(p.stat().st_size for p in files)}  # fmt: skip
    record("ingest", values, {"index": INDEX, "source": "data/sample"}, started_load=load_at_start)


if __name__ == "__main__":
    main()
