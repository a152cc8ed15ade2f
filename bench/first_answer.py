"""first_answer_s: seconds from `git clone` to the first answered `/v1/query` of `make run`.

What a new user waits for: a fresh clone of this repository (committed files only), `make run` in it
(set-up, the default corpus fetched, parsed, chunked and embedded, the app served), polled until
`POST /v1/query` answers 200. The llama.cpp wheel and the downloads are whatever this machine has
cached (`~/.cache/rayrag-wheels`; uv's cache, which the base installs from, and pip's, for torch and
uv), which the context records. The phases: `setup_s` to
the base install's stamp, `index_job_s` from the index job's own report, `serve_s` the rest (Ray's
and the CLI's start-up included). The clone is removed afterwards.

    python bench/first_answer.py [--repo .] [--keep]

It needs port 8000 free and no other Ray instance on this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import record

QUERY = {"query": "How do I read a CSV file?"}
URL = "http://127.0.0.1:8000/v1/query"
LIMIT_S = 3600


def first_answer(clone: Path, log_path: Path) -> tuple[float, float, dict]:
    """Clone, start `make run`, poll until it answers; returns the seconds, the seconds set-up took
    (to the base install's stamp, `make run`'s whole set-up) and the answer."""
    started, started_wall = time.perf_counter(), time.time()
    subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(clone)], check=True)
    shared = Path.cwd().parent / "shared"
    if shared.exists():
        (clone.parent / "shared").symlink_to(shared)
    with log_path.open("w") as log:
        run = subprocess.Popen(["make", "run"], cwd=clone, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.perf_counter() - started < LIMIT_S:
            if run.poll() is not None:
                raise SystemExit(f"make run ended ({run.returncode}) before answering; see {log_path}")
            try:
                reply = httpx.post(URL, json=QUERY, timeout=300)
                if reply.status_code == 200:
                    setup_s = (clone / ".venv" / ".base-stamp").stat().st_mtime - started_wall
                    return time.perf_counter() - started, setup_s, reply.json()
            except httpx.HTTPError:
                pass
            time.sleep(1)  # a poll of a server that is starting, not a wait standing in for an event
        raise SystemExit(f"no answer within {LIMIT_S} s; see {log_path}")
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(60)
        subprocess.run([str(clone / ".venv" / "bin" / "ray"), "stop", "--force"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone and its log")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    wheels = sorted(p.name for p in (Path.home() / ".cache" / "rayrag-wheels").glob("*.whl"))
    uv_cache_warm = Path(os.environ.get("UV_CACHE_DIR", Path.home() / ".cache" / "uv")).is_dir()  # before the run fills it
    work = Path(tempfile.mkdtemp(prefix="rayrag-first-answer-"))
    log_path = work / "make-run.log"
    try:
        seconds, setup_s, answer = first_answer(work / "main", log_path)
        job = _job_report(log_path)
        job |= {"setup_s": setup_s, "serve_s": seconds - setup_s - job["index_job_s"]}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    record(
        "first_answer",
        {"first_answer_s": seconds, **job},
        {"cached_wheels": wheels, "uv_cache_warm": uv_cache_warm, "backend": answer.get("backend"), "commit": _commit()},
        started_load=load_at_start,
    )  # fmt: skip


def _job_report(log_path: Path) -> dict[str, float]:
    """The index job's seconds and chunks, from the summary `rayrag index` prints at its end."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    chunks = re.search(r"chunks: \d+ added, \d+ removed, (\d+) in the index", text)
    seconds = re.search(r"^  ([\d.]+) s, [\d.]+ chunks/s$", text, re.MULTILINE)
    return {"index_job_s": float(seconds[1]) if seconds else float("nan"), "chunks": int(chunks[1]) if chunks else 0}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
