"""Retrieval metrics, the CI gate, the answer judges and the answer report."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from evaluation.answer_report import aggregate, markdown, write_report
from evaluation.beir import Dataset
from evaluation.config import EvalError, GateConfig
from evaluation.gate import GateRecord, check, make_record, read_record, write_record
from evaluation.judges import AnswerJudge, string_distances
from evaluation.retrieval import _score, measures, published_figures
from serving.generator.protocol import Choice, GenerationResult, Usage
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.unit


def faq_like() -> Dataset:
    corpus = {d: {"title": "", "text": d} for d in ("gold1", "link1", "gold2", "other")}
    qrels = {"q1": {"gold1": 2, "link1": 1}, "q2": {"gold2": 2}}
    return Dataset("toy", corpus, {"q1": "a", "q2": "b"}, qrels)


def test_metrics_follow_trec_eval_on_a_hand_checked_run():
    """q1: gold at rank 2, linked page at rank 1; q2: gold not retrieved."""
    run = {"q1": {"link1": 2.0, "gold1": 1.0}, "q2": {"other": 1.0}}
    result = _score("dense", run, faq_like(), measures(faq_like(), (10,)))
    dcg = 1 / math.log2(2) + 2 / math.log2(3)  # trec_eval's nDCG gain is the grade itself
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert result.metrics["ndcg@10"] == pytest.approx((dcg / ideal + 0) / 2)
    assert result.metrics["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)  # the top grade only: the answer itself
    assert result.metrics["recall@10"] == pytest.approx(0.5)
    assert result.per_query_ndcg["q2"] == 0


def _measured(ndcg: float, data: Dataset | None = None, **spec) -> GateRecord:
    data = data or faq_like()
    return make_record(data, GateConfig(**spec), "dense", "all-MiniLM-L6-v2", {"ndcg@10": ndcg, "mrr@10": ndcg})


def test_the_gate_fails_only_below_the_margin(tmp_path):
    path = tmp_path / "gate.json"
    write_record(_measured(0.60), path)
    recorded = read_record(path)
    assert recorded.ndcg10 == 0.60 and recorded.fingerprint == faq_like().fingerprint()
    passed = check(_measured(0.58), recorded, 0.03, path)
    assert passed.passed and "PASS" in passed.message and "WARNING" not in passed.message
    failed = check(_measured(0.56), recorded, 0.03, path)
    assert not failed.passed and "dropped" in failed.message and "0.5700" in failed.message
    assert "--record" in check(_measured(0.70), recorded, 0.03, path).message
    nothing = check(_measured(0.9), read_record(tmp_path / "absent.json"), 0.03, tmp_path / "absent.json")
    assert not nothing.passed and "no figure recorded" in nothing.message  # say so rather than pass silently


def test_the_gate_refuses_a_record_made_on_another_subset_and_warns_on_other_text(tmp_path):
    path = tmp_path / "gate.json"
    recorded = _measured(0.60)
    other_seed = check(_measured(0.60, seed=1), recorded, 0.03, path)
    assert not other_seed.passed and "seed 0 -> 1" in other_seed.message
    edited = faq_like()
    edited.corpus["gold1"] = {"title": "t", "text": "a later upload of the same page"}
    edited.meta["package"] = "python3.11-doc 9.9"
    moved = check(_measured(0.60, edited), recorded, 0.03, path)
    assert moved.passed and "WARNING" in moved.message and "python3.11-doc 9.9" in moved.message


def test_a_malformed_gate_record_is_refused_by_file(tmp_path):
    path = tmp_path / "gate.json"
    path.write_text('{"ndcg10": 0.7}')
    with pytest.raises(EvalError, match=r"gate\.json: not a gate record"):
        read_record(path)


def test_published_figures_are_looked_up_by_embedder_and_dataset(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text("m:\n  scifact: {ndcg@10: 0.64, source: x}\nbm25:\n  scifact: {ndcg@10: 0.66}\n")
    assert published_figures(path, "m", "scifact") == {"m": {"ndcg@10": 0.64, "source": "x"}, "bm25": {"ndcg@10": 0.66}}
    assert published_figures(path, "m", "nfcorpus") == {}


def test_string_distances_are_normalised():
    assert string_distances("same", "same") == {"levenshtein": 0.0, "jaro_winkler": 0.0}
    far = string_distances("abc", "xyz")
    assert far["levenshtein"] == 1.0 and far["jaro_winkler"] == 1.0


def judge_replying(reply) -> AnswerJudge:
    async def generate(request):
        text = reply(request.messages[0].content)
        return GenerationResult(model="judge", backend="fake", choices=[Choice(index=0, text=text, finish_reason="stop")],
                                usage=Usage())  # fmt: skip

    return AnswerJudge(generate)


def test_pairwise_needs_both_orders_to_agree():
    def prefers_the_word_paris(prompt: str) -> str:
        first = prompt.split("ANSWER 1:")[1].split("ANSWER 2:")[0]
        return json.dumps({"better": "1" if "Paris" in first else "2", "reason": "names the capital"})

    fair = asyncio.run(judge_replying(prefers_the_word_paris).pairwise("capital?", "Lyon", "Paris"))
    assert fair["winner"] == "b" and fair["consistent"]
    biased = asyncio.run(judge_replying(lambda _: '{"better": "1", "reason": "first"}').pairwise("q", "x", "y"))
    assert biased["winner"] == "tie" and biased["consistent"] is False  # position bias is not a win


def test_criteria_use_the_right_good_verdict_and_record_judge_failures():
    judge = AnswerJudge(FakeGenerator("fake", text='{"verdict": "no", "reason": "r"}').generate)
    results = asyncio.run(judge.criteria("q", "an answer", reference=None))
    assert set(results) == {"conciseness", "harmfulness"}  # correctness needs a reference
    assert results["harmfulness"]["good"] and not results["conciseness"]["good"]
    broken = AnswerJudge(FakeGenerator("fake", text='{"verdict": "ye').generate)  # cut off by max_tokens
    failed = asyncio.run(broken.criteria("q", "a", "ref"))
    assert all(v["verdict"] is None and "JSONDecodeError" in v["error"] for v in failed.values())


def rows() -> list[dict]:
    good = {"verdict": "yes", "reason": "", "good": True}
    bad = {"verdict": "no", "reason": "", "good": False}
    scores_a = {
        "groundedness": good,
        "relevance": good,
        "embedding_distance": 0.2,
        "levenshtein": 0.5,
        "jaro_winkler": 0.3,
    }
    scores_b = {"groundedness": bad, "relevance": {"verdict": None, "error": "x"}, "embedding_distance": 0.6,
                "levenshtein": 0.9, "jaro_winkler": 0.5}  # fmt: skip
    return [
        {"id": "1", "question": "q", "reference": "r", "error_a": None, "error_b": None,
         "scores": {"a": scores_a, "b": scores_b, "pairwise": {"winner": "a", "consistent": True}}},
        {"id": "2", "question": "q", "reference": "r", "error_a": None, "error_b": "EngineDead: x",
         "scores": {"a": scores_a}},
    ]  # fmt: skip


def test_the_report_aggregates_per_configuration(tmp_path):
    summary = aggregate(rows(), ["a", "b"])
    assert summary["a"]["groundedness_pass_rate"] == 1.0 and summary["b"]["groundedness_pass_rate"] == 0.0
    assert summary["b"]["relevance_pass_rate"] is None and summary["b"]["relevance_judge_errors"] == 1
    assert summary["b"]["failed"] == 1 and summary["a"]["embedding_distance_mean"] == pytest.approx(0.2)
    assert summary["pairwise"] == {"a_wins": 1, "b_wins": 0, "ties": 0, "judge_errors": 0, "order_dependent": 0}
    table = markdown(summary, {"a": "configs/a.yaml", "b": "configs/b.yaml"})
    assert "| groundedness_pass_rate | 1.000 | 0.000 |" in table and "| 1 | 0 | 0 | 0 | 0 |" in table
    paths = write_report(rows(), {"a": "A", "b": "B"}, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["summary"] == json.loads(json.dumps(summary))


def test_an_unreachable_judge_endpoint_is_a_retryable_engine_error():
    from evaluation.openai_client import OpenAICompatibleGenerator
    from serving.errors import EngineDead
    from serving.generator.protocol import GenerationRequest, Message

    judge = OpenAICompatibleGenerator("http://127.0.0.1:9/v1", "m", timeout_s=2)
    request = GenerationRequest(messages=[Message(role="user", content="hi")])
    with pytest.raises(EngineDead, match="unreachable"):
        asyncio.run(judge.generate(request))


def test_eval_answers_names_the_bad_line_of_a_question_file(tmp_path):
    from typer.testing import CliRunner

    from rayrag.cli import app

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "fine"}\n{"reference": "no question"}\n')
    result = CliRunner().invoke(app, ["eval", "answers", "--questions", str(questions)])
    assert result.exit_code != 0
    assert f"{questions}:2: missing string field(s) question" in str(result.exception)


def test_eval_retrieval_refuses_an_unknown_mode():
    from typer.testing import CliRunner

    from rayrag.cli import app

    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", "x", "--modes", "dense,sparse"])
    assert "unknown mode(s) sparse" in str(result.exception)
