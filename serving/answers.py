"""What a grounded answer is made of, and how it is reported: pure data and helpers, no I/O.

`Grounding` is a RAG request after retrieval, `Answer` is the result after the graders' self-check;
the helpers turn them into the `rayrag` extras of a response, its headers and its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.config import GatewayConfig
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, Usage
from serving.graders import Verdict
from serving.protocol import ScoredChunk, SearchResult
from serving.rag import citations
from serving.telemetry import metrics


def backend_header(backend: str) -> dict[str, str]:
    return {"x-rayrag-backend": backend}


@dataclass(frozen=True)
class CacheProbe:
    """A RAG question looked up in the semantic cache: where it belongs and what was found."""

    partition: str
    version: str
    question: str
    vector: list[float]
    hit: tuple[dict, float] | None


@dataclass(frozen=True)
class Grounding:
    """A RAG request after retrieval: the messages to generate from, what was found, the prompt used."""

    messages: list[Message]
    result: SearchResult
    chunks: list[ScoredChunk]  # the retrieved chunks that fit the context budget, as put in the prompt
    prompt: str


@dataclass(frozen=True)
class Answer:
    """A grounded answer after the self-check: the grounding it finally used, and the verdicts."""

    result: GenerationResult
    grounded: Grounding
    grades: dict[str, Any] | None = None


def grades_summary(first: dict[str, Verdict], final: dict[str, Verdict] | None) -> dict[str, Any]:
    """The verdicts as recorded and returned: the final ones, the first try's when it was redone."""
    last = final or first
    summary: dict[str, Any] = {name: v.model_dump() for name, v in last.items()}
    summary |= {"grounded": last["groundedness"].passed, "regenerated": final is not None}
    if final is not None:
        summary["first_try"] = {name: v.model_dump() for name, v in first.items()}
    return summary


def rag_extra(grounded: Grounding, config: GatewayConfig) -> dict[str, Any]:
    return {
        "index": grounded.result.index,
        "prompt": grounded.prompt,
        "index_version": grounded.result.version,
        "citations": [c.model_dump() for c in citations(grounded.chunks, config.snippet_chars)],
    }


def answer_extra(answer: Answer) -> dict[str, Any]:
    return {"grades": answer.grades} if answer.grades is not None else {}


def answer_headers(result: GenerationResult, extra: dict[str, Any], cacheable: bool) -> dict[str, str]:
    headers = backend_header(result.backend) | ({"x-rayrag-cache": "miss"} if cacheable else {})
    if "grades" in extra:
        headers["x-rayrag-grounded"] = "yes" if extra["grades"]["grounded"] else "no"
    return headers


def context_tokens(usage: Usage, generation: GenerationRequest | None) -> int:
    """The retrieved passages' share of the prompt tokens, estimated by their share of its characters
    (the gateway has no tokenizer of the generator; the backends count the prompt exactly)."""
    if generation is None or not generation.context or not generation.messages:
        return 0
    prompt_chars = sum(len(m.content) for m in generation.messages) or 1
    return round(usage.prompt_tokens * min(1.0, sum(map(len, generation.context)) / prompt_chars))


def observe_generation(span: Any, result: GenerationResult, seconds: float) -> None:
    """Backend, model, steps and tokens on the generate span; tokens/s in its histogram."""
    span.set_attributes({
        "rayrag.backend": result.backend, "rayrag.generator_model": result.model, "rayrag.steps": result.steps,
        "rayrag.completion_tokens": result.usage.completion_tokens,
    })  # fmt: skip
    if seconds > 0 and result.usage.completion_tokens:
        metrics.tokens_per_second().observe(result.usage.completion_tokens / seconds, {"backend": result.backend})
