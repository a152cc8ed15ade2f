"""Groundedness (hallucination) and answer-relevance graders: a structured yes/no with a reason.

Two judges behind one interface:
- `embedding` (default): every claim (sentence) of the answer must have a passage sentence within
  `support_threshold` cosine, and the answer must be within `relevance_threshold` of the question,
  with the index's own embedder. Deterministic and cheap, so it can run on every answer; the reason
  names the weakest claim and its score. It catches answers about something else (the usual
  hallucination of a small model), not a wrong detail on the right topic ("spring tides are caused
  by the wind" scores 0.72 against the tides passage): that takes the `llm` judge.
- `llm`: the platform's own generator asked for `{"verdict": "yes"|"no", "reason": "..."}` under a
  JSON schema (constrained decoding, see serving/checks/json_mode.py). As good as the model
  behind it: a 135M model on CPU here is a weak judge, a real deployment's vLLM model a fair one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from serving.config import GradersConfig
from serving.generator.extractive import SENTENCE_END, sentences
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, ResponseFormat, Usage

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
Generate = Callable[[GenerationRequest], Awaitable[GenerationResult]]
CITATION = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")
ABSTAINS = re.compile(r"^\W*(i do not know|i don't know|the passages do not say)\b", re.IGNORECASE)
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}
QUESTIONS = {
    "groundedness": "Is every statement of the ANSWER supported by the PASSAGES?",
    "relevance": "Does the ANSWER address the QUESTION?",
}


class Verdict(BaseModel):
    grader: Literal["groundedness", "relevance"]
    verdict: Literal["yes", "no"]
    reason: str
    score: float | None = None
    judge: str = "embedding"
    # what an llm judge's generation cost, charged to the key like the answer (never returned or recorded)
    usage: Usage | None = Field(default=None, exclude=True)
    model: str | None = Field(default=None, exclude=True)

    @property
    def passed(self) -> bool:
        return self.verdict == "yes"


def claims(answer: str) -> list[str]:
    """The answer's sentences (two words or more), citation markers removed."""
    parts = (" ".join(CITATION.sub("", s).split()) for s in SENTENCE_END.split(answer))
    return [s for s in parts if len(s.split()) >= 2]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EmbeddingJudge:
    name = "embedding"

    def __init__(self, config: GradersConfig, embed: Embed) -> None:
        self.config, self.embed = config, embed

    async def groundedness(self, question: str, answer: str, passages: list[str]) -> Verdict:
        said = claims(answer)
        evidence = [s for _, s in sentences(passages)] or passages
        if ABSTAINS.match(answer):
            return Verdict(grader="groundedness", verdict="yes", reason="the answer abstains: it claims nothing")
        if not said:
            return Verdict(grader="groundedness", verdict="yes", reason="the answer makes no claim to check")
        if not evidence:
            return Verdict(grader="groundedness", verdict="no", reason="there are no passages to support it")
        vectors = await self.embed(said + evidence)
        support = (vectors[: len(said)] @ vectors[len(said) :].T).max(axis=1)
        weakest = int(np.argmin(support))
        score = float(support[weakest])
        if score >= self.config.support_threshold:
            reason = f"every claim has a supporting passage sentence (weakest {score:.2f}: {_short(said[weakest])!r})"
            return Verdict(grader="groundedness", verdict="yes", reason=reason, score=score)
        reason = (
            f"claim {_short(said[weakest])!r} has no support in the passages "
            f"(closest {score:.2f} < {self.config.support_threshold})"
        )
        return Verdict(grader="groundedness", verdict="no", reason=reason, score=score)

    async def relevance(self, question: str, answer: str, passages: list[str]) -> Verdict:
        if not answer.strip():
            return Verdict(grader="relevance", verdict="no", reason="the answer is empty", score=0.0)
        vectors = await self.embed([question, CITATION.sub("", answer)])
        score = float(vectors[0] @ vectors[1])
        passed = score >= self.config.relevance_threshold
        relation = ">=" if passed else "<"
        reason = f"answer-question similarity {score:.2f} {relation} {self.config.relevance_threshold}"
        return Verdict(grader="relevance", verdict="yes" if passed else "no", reason=reason, score=score)


async def ask_json(
    generate: Generate, prompt: str, schema: dict, request_id: str, max_tokens: int = 96
) -> tuple[dict, str]:
    """One greedy, schema-constrained question to a judge model: (the parsed JSON, the model)."""
    request = GenerationRequest(
        messages=[Message(role="user", content=prompt)],
        max_tokens=max_tokens,
        temperature=0.0,
        response_format=ResponseFormat(type="json_schema", schema=schema),
        request_id=request_id,
    )
    result = await generate(request)
    return json.loads(result.choices[0].text), result


class LlmJudge:
    name = "llm"

    def __init__(self, generate: Generate, max_tokens: int = 96) -> None:
        self.generate = generate
        self.max_tokens = max_tokens

    async def _ask(self, grader: str, question: str, answer: str, passages: list[str]) -> Verdict:
        shown = "\n".join(f"[{n}] {p}" for n, p in enumerate(passages, start=1))
        prompt = (
            f"You are a strict grader. {QUESTIONS[grader]} Reply with JSON: "
            '{"verdict": "yes" or "no", "reason": one short sentence}.\n\n'
            f"PASSAGES:\n{shown}\n\nQUESTION: {question}\n\nANSWER: {answer}"
        )
        parsed, result = await ask_json(self.generate, prompt, VERDICT_SCHEMA, f"grade-{grader}", self.max_tokens)
        return Verdict(grader=grader, verdict=parsed["verdict"], reason=parsed["reason"], judge=f"llm:{result.model}",
                       usage=result.usage, model=result.model)  # fmt: skip

    async def groundedness(self, question: str, answer: str, passages: list[str]) -> Verdict:
        return await self._ask("groundedness", question, answer, passages)

    async def relevance(self, question: str, answer: str, passages: list[str]) -> Verdict:
        return await self._ask("relevance", question, answer, passages)


class Graders:
    """Both graders with the configured judge."""

    def __init__(self, config: GradersConfig, embed: Embed, generate: Generate) -> None:
        self.judge = LlmJudge(generate) if config.judge == "llm" else EmbeddingJudge(config, embed)

    async def grade(self, question: str, answer: str, passages: list[str]) -> dict[str, Verdict]:
        return {
            "groundedness": await self.judge.groundedness(question, answer, passages),
            "relevance": await self.judge.relevance(question, answer, passages),
        }
