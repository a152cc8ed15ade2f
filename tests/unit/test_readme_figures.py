"""Every figure in the README is rendered from a committed report (`rayrag readme`): the committed
README matches its reports, and a typed-in or stale figure is caught."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from bench import harness
from bench.harness import cpu_features, summary
from rayrag.figures import (
    BASELINE,
    BENCH,
    GATE,
    REPORTS,
    RETRIEVAL,
    FiguresError,
    bench_runs,
    cpu_class,
    render,
    stale_blocks,
    verdict,
)
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_the_committed_readme_matches_its_committed_reports():
    text = (REPO / "README.md").read_text()
    assert {"retrieval", "gate", "bench", "guardrails", "sweep", "conversations"} <= set(_blocks(text))
    assert stale_blocks(text, REPO) == []  # run `rayrag readme` after re-measuring


def _blocks(text: str) -> list[str]:
    from rayrag.figures import BLOCK

    return [m.group(2) for m in BLOCK.finditer(text)]


@pytest.fixture
def copy(tmp_path):
    for path in REPORTS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / path, tmp_path / path)
    shutil.copyfile(REPO / "README.md", tmp_path / "README.md")
    return tmp_path


def test_a_typed_in_figure_is_stale_and_rendering_puts_the_measured_one_back(copy):
    readme = copy / "README.md"
    gate = json.loads((copy / GATE).read_text())
    typed = readme.read_text().replace(f"nDCG@10 {gate['ndcg10']:.4f}", "nDCG@10 0.9999")
    assert typed != readme.read_text()
    readme.write_text(typed)
    assert stale_blocks(typed, copy) == ["gate"]
    checked = _cli("readme", "--check", "--path", str(readme))
    assert checked.returncode == 1 and "gate" in checked.stderr
    assert _cli("readme", "--path", str(readme)).returncode == 0
    assert f"nDCG@10 {gate['ndcg10']:.4f}" in readme.read_text() and stale_blocks(readme.read_text(), copy) == []


def test_a_remeasured_report_makes_its_block_stale(copy):
    report = json.loads((copy / RETRIEVAL).read_text())
    report["modes"]["dense"]["ndcg@10"] = 0.123
    (copy / RETRIEVAL).write_text(json.dumps(report))
    text = (copy / "README.md").read_text()
    assert stale_blocks(text, copy) == ["retrieval"] and "| 0.123 |" in render(text, copy)


def test_the_default_over_plain_dense_verdict_is_computed_from_both_reports(copy):
    report = json.loads((copy / RETRIEVAL).read_text())
    baseline = json.loads((copy / BASELINE).read_text())
    default = report["retriever"]["mode"]
    baseline["modes"]["dense"]["ndcg@10"] = report["modes"][default]["ndcg@10"] - 0.01
    (copy / BASELINE).write_text(json.dumps(baseline))
    text = render((copy / "README.md").read_text(), copy)
    assert "+0.010 nDCG@10 (MISSED, target >= +0.03" in text
    baseline["modes"]["dense"]["ndcg@10"] = report["modes"][default]["ndcg@10"] - 0.05
    (copy / BASELINE).write_text(json.dumps(baseline))
    assert "+0.050 nDCG@10 (met," in render(text, copy)
    baseline["fingerprint"] = "another dataset"
    (copy / BASELINE).write_text(json.dumps(baseline))
    with pytest.raises(FiguresError, match="different datasets"):
        render(text, copy)


def test_a_block_without_its_report_or_an_unknown_block_is_an_error(copy):
    (copy / BENCH).unlink()
    with pytest.raises(FiguresError, match=r"bench/results/latest\.json is missing"):
        render((copy / "README.md").read_text(), copy)
    with pytest.raises(FiguresError, match="nosuch"):
        render("<!-- figures:nosuch -->\n<!-- /figures:nosuch -->\n", copy)


def test_the_bench_summary_says_when_a_target_is_missed():
    assert verdict("search_rps_32c_over_bare", 0.42) == "MISSED (>= 1.5)"
    assert verdict("search_p99_over_p50", 2.4) == "met (<= 3)"
    run = {"benchmark": "b", "at": "t", "machine": {"host": "h", "cpus": 2, "cpu_model": "", "load_avg_1m": 1.0},
           "values": {"x": 1.0}}  # fmt: skip
    assert "| `x` | 1 |  |" in summary({"b": {"unrecorded": run}})


def test_a_bench_run_names_the_instruction_sets_its_embedding_rates_turn_on(copy):
    """Two hosts both called "AMD EPYC" embedded at 14.6 and 45.9 chunks/s: AVX2 against bf16 units."""
    zen3 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 bmi2 vaes\n"
    zen4 = zen3.replace("avx2 bmi2", "avx2 avx512f avx512_bf16 avx512_vnni bmi2")
    assert cpu_features(zen3) == ["avx2"]
    assert cpu_features(zen4) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert cpu_features("") == []
    latest = json.loads((copy / BENCH).read_text())
    run = next(r for r in bench_runs(latest) if "embed_openvino_vs_torch" in r["values"])
    run["machine"]["cpu_features"] = cpu_features(zen3)
    (copy / BENCH).write_text(json.dumps(latest))
    readme = render((copy / "README.md").read_text(), copy)
    assert re.search(r"\| `embed_openvino_vs_torch` \| [\d.]+ \| .* \| index_throughput, [\d-]+, 2 CPUs, avx2, load", readme)
    assert "2 CPUs (AMD EPYC, avx2)" in summary({"index_throughput": {"avx2": run}})
    assert [cpu_class({"cpu_features": cpu_features(text)}) for text in (zen3, zen4, "")] == ["avx2", "avx512_bf16", "x86-64"]
    assert cpu_class({"cpus": 2}) == "unrecorded"


def test_a_run_on_one_class_of_cpu_keeps_the_quoted_run_of_another(copy, monkeypatch):
    """The hosts alternate between AVX2 and bf16 units: a run on one replaces only that class's run, and
    the README shows each class's figure with its own verdict."""
    bench = copy / BENCH
    bench.write_text("{}")
    hosts = {"avx2": ["avx2"], "bf16": ["avx2", "avx512f", "avx512_bf16"]}

    def run_on(host: str, ratio: float) -> None:
        monkeypatch.setattr(harness, "machine", lambda: {"host": host, "cpus": 2, "cpu_model": "AMD EPYC",
                                                         "cpu_features": hosts[host], "load_avg_1m": 1.0})  # fmt: skip
        harness.record("index_throughput", {"embed_openvino_vs_torch": ratio}, path=bench.parent / "results.json")

    run_on("bf16", 2.5)
    run_on("avx2", 1.2)
    run_on("avx2", 1.1)  # replaces the earlier AVX2 run, and only it
    latest = json.loads(bench.read_text())
    assert {cpu: run["values"] for cpu, run in latest["index_throughput"].items()} == {
        "avx512_bf16": {"embed_openvino_vs_torch": 2.5}, "avx2": {"embed_openvino_vs_torch": 1.1}}
    rows = [line for line in render((copy / "README.md").read_text(), copy).splitlines() if line.startswith("| `embed_openvino_vs_torch` |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["2.5", "met (>= 2)"], ["1.1", "MISSED (>= 2)"]]
    assert "avx512f avx512_bf16, load" in rows[0] and ", avx2, load" in rows[1]
    written = (bench.parent / "summary.md").read_text()
    assert written.index("## index_throughput (avx512_bf16)") < written.index("## index_throughput (avx2)")
    assert len(json.loads((bench.parent / "results.json").read_text())) == 3  # every run is still kept


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayrag", *args], capture_output=True, text=True, cwd=REPO)


def test_forget_drops_one_class_s_run_and_names_what_is_held_when_asked_for_another(tmp_path, capsys):
    """The runs from before cpu_features stay `unrecorded` beside a new run on their host's class until
    `python -m bench.harness forget` drops them; the summary is rewritten and results.json keeps every run."""
    latest = tmp_path / "latest.json"
    run = {"benchmark": "first_answer", "at": "t", "values": {"first_answer_s": 455.0},
           "machine": {"host": "h", "cpus": 2, "cpu_model": "", "load_avg_1m": 1.0}}  # fmt: skip
    newer = run | {"values": {"first_answer_s": 420.0}, "machine": run["machine"] | {"cpu_features": ["avx512_bf16"]}}
    latest.write_text(json.dumps({"first_answer": {"unrecorded": run, "avx512_bf16": newer}}))
    harness.main(["forget", "first_answer", "unrecorded", "--latest", str(latest)])
    assert json.loads(latest.read_text()) == {"first_answer": {"avx512_bf16": newer}}
    written = (tmp_path / "summary.md").read_text()
    assert "## first_answer (avx512_bf16)" in written and "(unrecorded)" not in written
    with pytest.raises(SystemExit, match=r"no first_answer run on avx2; it has: first_answer avx512_bf16"):
        harness.main(["forget", "first_answer", "avx2", "--latest", str(latest)])
    harness.main(["forget", "first_answer", "avx512_bf16", "--latest", str(latest)])
    assert json.loads(latest.read_text()) == {}  # no benchmark left without runs
    assert "forgot first_answer on avx512_bf16" in capsys.readouterr().out
