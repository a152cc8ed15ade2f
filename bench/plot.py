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


def autoscaling_png(timeline: list[dict], path: Path) -> Path:
    """Four panels over one time axis: running replicas per deployment, requests in flight (at the
    clients and at the router, per chain step), p50/p99 latency, and answers per second by backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["t"] for row in timeline]

    def series(key: str) -> dict[str, list[float]]:
        names = sorted({name for row in timeline for name in row[key]})
        return {name: [row[key].get(name, 0) for row in timeline] for name in names}

    figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    panels = (
        (axes[0], series("replicas"), "running replicas", "steps-post"),
        (axes[1], {f"clients: {k}": v for k, v in series("client_in_flight").items()}
                  | {f"router -> {k}": v for k, v in series("router_in_flight").items()}, "in flight", "steps-post"),
        (axes[3], series("answers"), "answers per second", "default"),
    )  # fmt: skip
    for axis, lines, label, style in panels:
        for name, values in lines.items():
            axis.plot(t, values, label=name, drawstyle=style)
        axis.set_ylabel(label)
    for key in ("p50_ms", "p99_ms"):
        axes[2].plot(t, [row[key] for row in timeline], ".", label=key.removesuffix("_ms"), markersize=3)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("latency (ms, log)")
    axes[3].set_xlabel("seconds since the ramp started")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
