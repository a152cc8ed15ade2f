"""Shared by every benchmark: print `name: value` lines, keep each benchmark's latest run on each class of
CPU (`rayrag.figures.cpu_class`) with the machine it ran on in `bench/results/latest.json`, and write
`bench/results/summary.md` from it.

The two files are committed for the run whose figures the README quotes (`rayrag readme` renders
the README's figures from `latest.json`), so a figure in the README is always one a command wrote.
`results.json` keeps every run (not committed). The targets live in `rayrag.figures.TARGETS` and the
summary says met or missed: a ratio that misses its target is reported, never hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from evaluation import provenance
from indexes.embedder import EmbedderConfig, resolve_model_path

# One list of targets, one verdict and one CPU class for the summary and the README.
from rayrag.figures import bench_runs, cpu_class, features, verdict

RESULTS_DIR = Path(__file__).parent / "results"
RESULTS = RESULTS_DIR / "results.json"
LATEST = RESULTS_DIR / "latest.json"
SUMMARY = RESULTS_DIR / "summary.md"


def bare_sentence_transformer(embedder: EmbedderConfig):
    """The baseline every ratio divides by: the configured model in sentence-transformers on PyTorch,
    as a user would load it (rayrag's embedder may run on OpenVINO instead)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_path(embedder.model)), device="cpu")
    model.max_seq_length = embedder.max_seq_length
    return model


# The instruction sets the embedding figures turn on ("AMD EPYC" names both this project's AVX2 host and its
# bf16 one); a run's class in latest.json is the widest of rayrag.figures.CPU_CLASSES among them.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features(cpuinfo: str) -> list[str]:
    """Which of CPU_FEATURES the first processor in a /proc/cpuinfo text has."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [feature for feature in CPU_FEATURES if feature in flags]


def machine() -> dict:
    """What the figures depend on: a ratio from a loaded 2-core VM is not one from a quiet 16-core box,
    and an embedding rate on AVX2 is not one on bf16 units (`cpu_features`)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return {
        "host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "cpu_features": cpu_features(text),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }  # fmt: skip


def record(
    benchmark: str, values: dict[str, float], context: dict | None = None, path: Path = RESULTS,
    started_load: float | None = None,
) -> None:  # fmt: skip
    """Print each value as `name: value`, append the run to `path` and make it the benchmark's latest
    on this class of CPU (with the machine and its load) in `latest.json` beside it, then rewrite the
    summary. Runs on other classes stay: this project's hosts alternate between AVX2 and bf16 units."""
    for name, value in values.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    run = {
        "benchmark": benchmark, "at": provenance.now(),
        "machine": machine() | {"load_avg_1m_at_start": None if started_load is None else round(started_load, 2)},
        "values": values, "context": context or {},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, run], indent=1))
    latest_path = path.parent / LATEST.name
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {}
    latest.setdefault(benchmark, {})[cpu_class(run["machine"])] = run
    _write_latest(latest_path, latest)


def forget(benchmark: str, cpu: str, latest_path: Path = LATEST) -> None:
    """Drop a benchmark's latest run on one CPU class from `latest.json`, and rewrite the summary: for a run
    that a newer one supersedes without replacing it (an `unrecorded` run from before cpu_features, once
    its host's class has a run) or a class of host the project no longer runs on. `results.json` keeps it."""
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {}
    if cpu not in latest.get(benchmark, {}):
        held = ", ".join(f"{run['benchmark']} {cpu_class(run['machine'])}" for run in bench_runs(latest)) or "none"
        raise SystemExit(f"{latest_path} has no {benchmark} run on {cpu}; it has: {held}")
    del latest[benchmark][cpu]
    latest = {name: runs for name, runs in latest.items() if runs}
    _write_latest(latest_path, latest)


def _write_latest(latest_path: Path, latest: dict) -> None:
    latest_path.write_text(json.dumps(latest, indent=1, sort_keys=True) + "\n")
    (latest_path.parent / SUMMARY.name).write_text(summary(latest))


def summary(latest: dict) -> str:
    """Markdown: one table per benchmark and CPU class, each figure with its target's verdict, and the machine."""
    lines = ["# Benchmark summary", "", "Written by `bench/harness.py` from `latest.json`; do not edit by hand.", ""]
    for run in bench_runs(latest):
        m = run["machine"]
        lines += [f"## {run['benchmark']} ({cpu_class(m)})", "",
                  f"{run['at']} on `{m['host']}`: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}"
                  f"{features(m)}), "
                  f"load average {m.get('load_avg_1m_at_start')} at start, {m['load_avg_1m']} at end.", "",
                  f"Context: `{json.dumps(run.get('context', {}), sort_keys=True)}`", "",
                  "| figure | value | target |", "|---|---:|---|"]  # fmt: skip
        for name, value in run["values"].items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| `{name}` | {shown} | {verdict(name, value)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description="Maintain bench/results/latest.json.")
    commands = parser.add_subparsers(dest="command", required=True)
    drop = commands.add_parser("forget", help="drop a benchmark's latest run on one CPU class (then `rayrag readme`)")
    drop.add_argument("benchmark", help="e.g. first_answer")
    drop.add_argument("cpu_class", help="e.g. unrecorded, avx2, avx512_bf16 (the summary's section names)")
    drop.add_argument("--latest", type=Path, default=LATEST, help="the latest.json to edit (default: %(default)s)")
    args = parser.parse_args(argv)
    forget(args.benchmark, args.cpu_class, args.latest)
    print(f"{args.latest}: forgot {args.benchmark} on {args.cpu_class}; run `rayrag readme` to re-render the README")


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started


if __name__ == "__main__":
    main()
