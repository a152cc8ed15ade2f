"""Concurrent load with a real load generator: Locust, headless, in its own process.

Locust (gevent) runs as a subprocess so its monkey-patching stays out of the benchmark's process;
its CSV summary gives the percentiles. Both Locust and the app share this machine's cores, so at
32 users the figures include the load generator's own CPU use: compare runs on one machine only.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PERCENTILES = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "100%")


def locust_search(url: str, index: str, workdir: Path, users: int = 32, seconds: int = 20) -> dict:
    """Run the search users; returns the `/v1/search` row: requests, failures, rps and percentiles (ms)."""
    prefix = workdir / "locust"
    command = ["locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
               "-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
    subprocess.run(command, check=False, env=os.environ | {"RAYRAG_BENCH_INDEX": index},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120)  # fmt: skip
    with open(f"{prefix}_stats.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "/v1/search")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "percentiles_ms": {p: float(row[p]) for p in PERCENTILES if row.get(p) not in (None, "", "N/A")},
    }


def load_values(result: dict, bare_sequential_rps: float, users: int) -> dict[str, float]:
    """Percentiles at `users` clients, and their rate over the bare library's sequential rate."""
    p = result["percentiles_ms"]
    return {
        f"search_p50_ms_{users}c": p["50%"],
        f"search_p99_ms_{users}c": p["99%"],
        "search_p99_over_p50": p["99%"] / p["50%"],
        f"search_rps_{users}c": result["rps"],
        f"search_failures_{users}c": result["failures"],
        f"search_rps_{users}c_over_bare": result["rps"] / bare_sequential_rps,
    }
