"""The latency PNG: a CDF per measured path (sequential samples) and Locust's percentiles at load."""

from __future__ import annotations

from pathlib import Path


def latency_png(samples_ms: dict[str, list[float]], percentiles_ms: dict[str, dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, values in samples_ms.items():
        ordered = sorted(values)
        axis.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=name)
    for name, points in percentiles_ms.items():
        keys = list(points)
        axis.plot([points[k] for k in keys], [float(k.rstrip("%")) / 100 for k in keys], "o--", label=name)
    axis.set_xscale("log")
    axis.set_xlabel("latency (ms, log scale)")
    axis.set_ylabel("fraction of requests")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
