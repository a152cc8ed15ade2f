"""`bench/ann.py` at a CI-sized `--n`: it runs, reports every figure, and an HNSW index finds the
exact neighbours of clustered vectors (recall is behaviour, not timing)."""

from __future__ import annotations

import json

import pytest

from bench import ann

pytestmark = pytest.mark.unit
FIGURES = {"ann_build_s", "ann_peak_rss_mb", "ann_rss_growth_mb", "ann_recall_at_10", "ann_query_p50_ms",
           "exact_query_p50_ms", "ann_vs_exact_query", "wrapper_overhead"}  # fmt: skip


@pytest.mark.parametrize("kind", ["hnsw", "ivf_pq"])
def test_ann_benchmark_reports_its_figures(kind, tmp_path, capsys):
    results = tmp_path / "results.json"
    values = ann.main(["--n", "3000", "--queries", "20", "--index-type", kind, "--results", str(results)])
    assert set(values) == FIGURES and 0.0 <= values["ann_recall_at_10"] <= 1.0
    if kind == "hnsw":
        assert values["ann_recall_at_10"] >= 0.9
    printed = capsys.readouterr().out
    assert all(f"{name}: " in printed for name in FIGURES)
    [run] = json.loads(results.read_text())
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest == {f"ann_{kind}": run} and run["machine"]["cpus"] and "load_avg_1m_at_start" in run["machine"]
    summary = (tmp_path / "summary.md").read_text()
    assert f"## ann_{kind}" in summary and f"| `ann_recall_at_10` | {values['ann_recall_at_10']:.4g} |" in summary
    assert run["benchmark"] == f"ann_{kind}" and run["context"]["n"] == 3000 and run["context"]["index"]["index_type"] == kind
