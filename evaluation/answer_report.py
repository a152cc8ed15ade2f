"""The answer evaluation's report: per-configuration aggregates as JSON and a Markdown table, and a
PNG of the score distributions (a mean hides a bimodal judge; the histogram shows it)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

VERDICTS = ("groundedness", "relevance", "conciseness", "correctness", "harmfulness")
DISTANCES = ("embedding_distance", "levenshtein", "jaro_winkler")


def aggregate(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label in labels:
        scored = [row["scores"][label] for row in rows if label in row["scores"]]
        entry: dict[str, Any] = {"answered": len(scored), "failed": sum(1 for r in rows if r.get(f"error_{label}"))}
        for name in VERDICTS:
            verdicts = [s[name] for s in scored if name in s]
            good = [v["good"] for v in verdicts if v.get("verdict") is not None]
            entry[f"{name}_pass_rate"] = sum(good) / len(good) if good else None
            entry[f"{name}_judge_errors"] = len(verdicts) - len(good)
        for name in DISTANCES:
            values = [s[name] for s in scored if name in s]
            entry[f"{name}_mean"] = statistics.fmean(values) if values else None
        summary[label] = entry
    pairs = [row["scores"]["pairwise"] for row in rows if "pairwise" in row["scores"]]
    if pairs:
        winners = [p.get("winner") for p in pairs]
        summary["pairwise"] = {
            "a_wins": winners.count("a"), "b_wins": winners.count("b"), "ties": winners.count("tie"),
            "judge_errors": winners.count(None),
            "order_dependent": sum(1 for p in pairs if p.get("consistent") is False),
        }  # fmt: skip
    return summary


def markdown(summary: dict[str, Any], names: dict[str, str]) -> str:
    labels = [label for label in names if label in summary]
    lines = ["| metric | " + " | ".join(f"{label.upper()}: {names[label]}" for label in labels) + " |",
             "|---|" + "---:|" * len(labels)]  # fmt: skip
    for metric in summary[labels[0]]:
        cells = [_cell(summary[label][metric]) for label in labels]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if "pairwise" in summary:
        pair = summary["pairwise"]
        lines += ["", "Pairwise (asked in both orders; a winner only when both orders agree):", "",
                  "| A wins | B wins | ties | order-dependent | judge errors |", "|---:|---:|---:|---:|---:|",
                  f"| {pair['a_wins']} | {pair['b_wins']} | {pair['ties']} | {pair['order_dependent']} "
                  f"| {pair['judge_errors']} |"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def chart(rows: list[dict[str, Any]], names: dict[str, str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(DISTANCES) + 1, figsize=(4.2 * (len(DISTANCES) + 1), 3.6))
    for axis, metric in zip(axes, DISTANCES, strict=False):
        for label, name in names.items():
            values = [r["scores"][label][metric] for r in rows if metric in r["scores"].get(label, {})]
            axis.hist(values, bins=10, range=(0, 1.2 if metric == "embedding_distance" else 1), alpha=0.5,
                      label=f"{label.upper()}: {name}")  # fmt: skip
        axis.set_title(metric.replace("_", " "))
        axis.set_xlabel("distance to the reference (0 = same)")
    summary = aggregate(rows, list(names))
    width = 0.8 / len(names)
    for n, label in enumerate(names):
        rates = [summary[label][f"{v}_pass_rate"] or 0.0 for v in VERDICTS]
        axes[-1].bar([i + n * width for i in range(len(VERDICTS))], rates, width, label=label.upper())
    axes[-1].set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(VERDICTS))], VERDICTS, rotation=30)
    axes[-1].set_title("judge pass rate")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(rows: list[dict[str, Any]], names: dict[str, str], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    summary = aggregate(rows, list(names))
    paths = {"json": directory / "answers.json", "markdown": directory / "answers.md", "png": directory / "answers.png"}
    paths["json"].write_text(json.dumps({"configs": names, "summary": summary, "rows": rows}, indent=1))
    paths["markdown"].write_text(markdown(summary, names))
    chart(rows, names, paths["png"])
    return paths
