"""The embedding graders with the real MiniLM embedder, and the LLM judge's structured verdict."""

from __future__ import annotations

import asyncio
import json

import pytest

from indexes.embedder import EmbedderConfig, load_embedder
from serving.config import GradersConfig
from serving.graders import VERDICT_SCHEMA, Graders, claims
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.unit
PASSAGES = [
    "Tides are the rise and fall of sea levels caused by the gravitational pull of the Moon and the Sun. "
    "Spring tides happen at new and full moon; neap tides at the quarters.",
    "Sourdough is bread leavened by a starter of wild yeast and lactic acid bacteria.",
]
QUESTION = "When do spring tides happen?"


@pytest.fixture(scope="module")
def graders():
    embedder = load_embedder(EmbedderConfig())

    async def embed(texts):
        return embedder.encode(texts)

    return Graders(GradersConfig(enabled=True), embed, generate=None)


def grade(graders, answer: str) -> dict:
    return asyncio.run(graders.grade(QUESTION, answer, PASSAGES))


def test_a_grounded_answer_is_yes_on_both(graders):
    verdicts = grade(graders, "Spring tides happen at new and full moon [1].")
    assert verdicts["groundedness"].verdict == "yes" and verdicts["relevance"].verdict == "yes"
    assert "weakest" in verdicts["groundedness"].reason


def test_an_ungrounded_claim_is_named_in_the_reason(graders):
    answer = "Spring tides happen at new and full moon. The Eiffel Tower was finished in 1889 for a world fair."
    verdicts = grade(graders, answer)
    assert verdicts["groundedness"].verdict == "no"
    assert "Eiffel Tower" in verdicts["groundedness"].reason


def test_an_abstention_is_grounded(graders):
    assert grade(graders, "I do not know.")["groundedness"].verdict == "yes"


def test_an_off_topic_answer_is_not_relevant(graders):
    assert grade(graders, "Bake the dough in a hot Dutch oven.")["relevance"].verdict == "no"


def test_claims_drop_citation_markers_and_fragments():
    assert claims("Spring tides happen at full moon [1]. Yes. Neap tides [2, 3] at quarters.") == [
        "Spring tides happen at full moon.",
        "Neap tides at quarters.",
    ]


def test_the_llm_judge_returns_the_generators_structured_verdict():
    judge = FakeGenerator("vllm", text=json.dumps({"verdict": "no", "reason": "the passages do not say so"}))
    graders = Graders(GradersConfig(enabled=True, judge="llm"), embed=None, generate=judge.generate)
    verdicts = asyncio.run(graders.grade(QUESTION, "At noon.", PASSAGES))
    assert verdicts["groundedness"].verdict == "no" and verdicts["groundedness"].judge == "llm:m"
    asked = judge.requests[0]
    assert asked.response_format.schema_ == VERDICT_SCHEMA and "PASSAGES" in asked.messages[0].content
