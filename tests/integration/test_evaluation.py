"""Evaluation end to end on real parts: `rayrag eval retrieval|gate` over a BEIR-layout dataset
(the index job, the serving retriever, trec_eval through ir_measures), and the answer evaluation
job on Ray Data with llama.cpp answering and judging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.config_file import load_model
from evaluation.answer_report import write_report
from evaluation.config import AnswerEvalConfig
from evaluation.eval_job import read_questions, run_answer_eval
from serving.config import ServingSettings
from tests.conftest import REPO, SAMPLE_DIR
from tests.integration.conftest import job_config, ray_env, run_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
MINI = REPO / "tests" / "data" / "beir-mini"
METRICS = {"ndcg@10", "mrr@10", "recall@10", "recall@100"}


def rayrag(gcs: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayrag", *args], cwd=REPO, env=ray_env(gcs),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


def test_eval_retrieval_reports_every_mode_and_the_published_figure(ray_cluster, workdir, cross_encoder_dir):
    report = workdir / "mini.json"
    done = rayrag(ray_cluster, "eval", "retrieval", "--dataset", str(MINI), "--modes", "dense,bm25,hybrid,rerank",
                  "--reranker", str(cross_encoder_dir), "--out", str(report), "--set", f"eval.workdir={workdir}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(report.read_text())
    assert (body["queries"], body["documents"]) == (8, 53)
    assert set(body["modes"]) == {"dense", "bm25", "hybrid", "rerank"}
    assert all(set(m) == METRICS and all(0 <= v <= 1 for v in m.values()) for m in body["modes"].values())
    assert body["modes"]["dense"]["ndcg@10"] > 0.5  # MiniLM finds most FAQ answers among 53 sections
    assert "mode        ndcg@10" in done.stdout and "published: no figure recorded for 'python-faq-mini'" in done.stdout


def test_eval_gate_records_its_figure_with_provenance_and_fails_ci_below_it(ray_cluster, workdir):
    """On its own (not reading the retrieval test's report): the figure it records is what it measured."""
    record = workdir / "gate.json"
    gate = ["eval", "gate", "--set", f"eval.workdir={workdir}", "--set", f"eval.gate.dataset={MINI}",
            "--set", "eval.gate.queries=8", "--set", "eval.gate.distractors=100", "--set", f"eval.gate.record={record}"]  # fmt: skip
    missing = rayrag(ray_cluster, *gate)
    assert missing.returncode == 1 and "no figure recorded" in missing.stdout
    written = rayrag(ray_cluster, *gate, "--record")
    assert written.returncode == 0, written.stdout + written.stderr[-2000:]
    body = json.loads(record.read_text())
    measured = body["ndcg10"]
    assert f'"ndcg@10": {measured}' in written.stdout and (body["queries"], body["documents"]) == (8, 53)
    assert body["fingerprint"] and body["mode"] == "hybrid" and body["split"] == "test" and "--record" in body["command"]
    passed = rayrag(ray_cluster, *gate)
    assert passed.returncode == 0 and "PASS" in passed.stdout, passed.stdout + passed.stderr[-2000:]
    record.write_text(json.dumps(body | {"ndcg10": min(1.0, measured + 0.05)}))  # a better past
    failed = rayrag(ray_cluster, *gate)
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "retrieval quality dropped" in failed.stdout


def serve_config(index_root: Path, chain: list[str]) -> ServingSettings:
    serve = {"retriever": {"indexes": ["test"]}, "gateway": {"default_max_tokens": 48},
             "router": {"chain": [{"backend": b} for b in chain]}, "primary": None,
             "fallback": {"model": "smollm2-135m-instruct", "n_threads": 1} if "fallback" in chain else None}  # fmt: skip
    return load_model(ServingSettings, {"indexes": {"root": str(index_root)}, "serve": serve}, "test", base=REPO)


JUDGED = ("groundedness", "relevance", "conciseness", "correctness", "harmfulness")


def test_answer_evaluation_compares_two_configurations(ray_cluster, tmp_path):
    config = job_config(tmp_path)
    run_job(config, SAMPLE_DIR)
    questions = read_questions(REPO / "data" / "eval" / "sample_questions.jsonl")[:2]
    configs = {
        "a": serve_config(config.indexes.root, ["extractive"]),
        "b": serve_config(config.indexes.root, ["fallback"]),
    }
    rows = run_answer_eval(questions, configs, AnswerEvalConfig(), config.indexes.embedder)
    assert [r["id"] for r in sorted(rows, key=lambda r: r["id"])] == ["glob-pattern", "secrets-token"]
    for row in rows:
        assert row["model_a"] == "extractive:extractive" and row["model_b"].startswith("llama_cpp:")
        for label in ("a", "b"):
            scores = row["scores"][label]
            assert {"groundedness", "relevance", "conciseness", "correctness", "harmfulness"} <= set(scores)
            for k in JUDGED:  # a verdict, or an error that says why (a reply cut off by max_tokens)
                assert scores[k]["verdict"] in ("yes", "no") or (scores[k]["verdict"] is None and scores[k]["error"])
            assert 0 <= scores["levenshtein"] <= 1 and 0 <= scores["jaro_winkler"] <= 1
            assert -0.1 <= scores["embedding_distance"] <= 2
        pairwise = row["scores"]["pairwise"]
        assert pairwise["winner"] in ("a", "b", "tie") or (pairwise["winner"] is None and pairwise["error"])
    verdicts = [row["scores"][label][k] for row in rows for label in ("a", "b") for k in JUDGED]
    answered = [v for v in verdicts if v["verdict"] in ("yes", "no")]
    # the judge decodes under a JSON grammar: most verdicts must parse (a judge that always errs fails here)
    assert len(answered) * 2 >= len(verdicts), [v.get("error") for v in verdicts]
    secrets = next(r for r in rows if r["id"] == "secrets-token")
    assert "secrets" in secrets["answer_a"]  # the extractive answer quotes the secrets page
    paths = write_report(rows, {"a": "extractive", "b": "llama.cpp"}, tmp_path / "report")
    assert "| groundedness_pass_rate |" in paths["markdown"].read_text()
    assert paths["png"].stat().st_size > 1000


def test_eval_conversations_scores_each_second_turn_three_ways_on_a_real_index(ray_cluster, workdir):
    report = workdir / "conversations.json"
    dialogues = REPO / "tests" / "data" / "beir-mini-dialogues.jsonl"
    done = rayrag(ray_cluster, "eval", "conversations", "--dataset", str(MINI), "--dialogues", str(dialogues),
                  "--out", str(report), "--set", f"eval.workdir={workdir}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(report.read_text())
    assert (body["dialogues"], body["rewriter"], body["mode"]) == (3, "turns", "hybrid")
    assert [row["by"] for row in body["rows"]] == ["turns"] * 3
    assert body["rows"][0]["query"] == "Can't we get rid of the lock behind that?\nNone of my threads seem to run: why?"
    assert body["recall"]["standalone"] == 1.0  # among 53 sections, each standalone wording finds its answer
    assert set(body["splits"]) == {"all", "test"} and "ratio" in done.stdout
    refused = rayrag(ray_cluster, "eval", "conversations", "--dataset", str(MINI), "--rewriter", "oracle")
    assert refused.returncode == 2 and "--rewriter 'oracle'" in refused.stderr and "Traceback" not in refused.stderr
