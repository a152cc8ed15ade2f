"""Shared by every benchmark: print `name: value` lines and append them to a JSON results file."""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "results.json"


def record(benchmark: str, values: dict[str, float], context: dict | None = None, path: Path = RESULTS) -> None:
    """Print each value as `name: value` and append the run to the results file."""
    for name, value in values.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append({
        "benchmark": benchmark, "at": datetime.now(UTC).isoformat(), "host": platform.node(),
        "values": values, "context": context or {},
    })  # fmt: skip
    path.write_text(json.dumps(runs, indent=1))


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
