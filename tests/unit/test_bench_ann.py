"""`bench/ann.py` at a CI-sized `--n`: it runs both index kinds in one run, reports every figure and
the ratios between them, and finds the exact neighbours of clustered vectors (recall is behaviour,
not timing)."""

from __future__ import annotations

import json

import pytest

from bench import ann
from rayrag.figures import cpu_class

pytestmark = pytest.mark.unit
PER_KIND = ("build_s", "index_mb", "recall_at_10", "query_p50_ms")
FIGURES = {f"{kind}_{name}" for kind in ann.KINDS for name in PER_KIND} | {
    "exact_query_p50_ms", "exact_index_mb", "ivf_pq_vs_hnsw_query", "ivf_pq_vs_hnsw_memory",
}  # fmt: skip


def test_ann_benchmark_compares_hnsw_and_refined_ivf_pq_in_one_run(tmp_path, capsys):
    results = tmp_path / "results.json"
    values = ann.main(["--n", "4000", "--queries", "20", "--results", str(results)])
    assert set(values) == FIGURES
    assert values["hnsw_recall_at_10"] >= 0.9 and values["ivf_pq_recall_at_10"] >= 0.9  # re-scored candidates
    assert values["ivf_pq_index_mb"] < values["hnsw_index_mb"]  # fp16 vectors and PQ codes vs floats and a graph
    printed = capsys.readouterr().out
    assert all(f"{name}: " in printed for name in FIGURES)
    [run] = json.loads(results.read_text())
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest == {"ann_4k": {cpu_class(run["machine"]): run}} and run["machine"]["cpus"] and "load_avg_1m_at_start" in run["machine"]
    assert run["context"]["n"] == 4000 and set(run["context"]["indexes"]) == set(ann.KINDS)
    assert run["context"]["indexes"]["ivf_pq"]["nlist"] == 64  # sized for 4,000 vectors (ivf_shape), recorded
    summary = (tmp_path / "summary.md").read_text()
    assert "## ann_4k" in summary and "`ivf_pq_vs_hnsw_query`" in summary


def test_codes_alone_are_what_re_scoring_fixes(tmp_path):
    values = ann.main(["--n", "4000", "--queries", "20", "--kinds", "ivf_pq", "--results", str(tmp_path / "r.json"),
                       "--set", "index_job.backend.refine=null"])  # fmt: skip
    assert values["ivf_pq_recall_at_10"] < 0.9 and "ivf_pq_vs_hnsw_query" not in values


def test_an_unknown_kind_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ann.main(["--kinds", "annoy", "--results", str(tmp_path / "r.json")])
    assert "--kinds 'annoy'" in capsys.readouterr().err
