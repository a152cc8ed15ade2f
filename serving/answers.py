"""What an answer is made of as it goes through the flow (serving/flow.py): pure data and helpers, no I/O.

`Turn` is a request as every transport hands it to the flow, `Plan` is what the flow decided before
generating (route, grounding, cache probe), `Grounding` is a RAG request after retrieval, `Answer`
the result after the graders' self-check, `Outcome` what every transport renders; the helpers turn
them into the `rayrag` extras of a response, its headers and its record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from serving.config import GatewayConfig
from serving.followups import Followup
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, Usage
from serving.graders import Verdict
from serving.protocol import ScoredChunk, SearchRequest, SearchResult
from serving.rag import citations
from serving.stores.keys import Principal
from serving.telemetry import metrics


def backend_header(backend: str) -> dict[str, str]:
    return {"x-rayrag-backend": backend}


class Route(NamedTuple):
    """Where a request leads: an index (with its served version) and/or a named generator."""

    index: str | None
    generator: str | None
    version: str | None = None


@dataclass(frozen=True)
class Turn:
    """One request as a transport hands it to the flow. It needs the `Principal` that admission
    returned, so no transport can skip admission; everything else is still unscreened."""

    endpoint: Literal["chat", "completion", "query"]
    who: Principal
    rid: str
    model: str | None  # as the client named it; None: the router's choice (/v1/query)
    messages: list[Message] | None = None  # chat and /v1/query: the client's messages
    prompt: str | None = None  # completions: the raw prompt
    search: SearchRequest | None = None  # /v1/query: the client's retrieval parameters
    max_tokens: int | None = None
    temperature: float = 1.0
    sampling: dict[str, Any] = field(default_factory=dict)  # n, top_p, stop, seed, response_format
    session_id: str | None = None
    prompt_template: str | None = None
    client_rid: str | None = None  # the client's own request id: a correlation field, never a key


@dataclass(frozen=True)
class CacheProbe:
    """A RAG question looked up in the semantic cache: where it belongs and what was found."""

    partition: str
    version: str
    question: str
    vector: list[float] | None  # None when found by its text, without embedding
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


@dataclass
class Plan:
    """What the flow decided before any model ran; `produced` is what generation has cost so far
    (what accounting charges, whatever ends the request)."""

    turn: Turn
    asked: list[Message] | None  # the client's messages after input screening (what a session keeps)
    route: Route
    generation: GenerationRequest | None  # None on a cache hit
    grounded: Grounding | None = None
    search: SearchRequest | None = None
    probe: CacheProbe | None = None
    produced: Usage | None = None
    followup: Followup | None = None  # the query a RAG turn was searched with (and what its rewrite cost)
    judged: list[tuple[Usage, str]] = field(default_factory=list)  # each llm judge's generation: (usage, model)


@dataclass(frozen=True)
class Outcome:
    """A finished answer: what every transport renders, records and remembers."""

    rid: str
    result: GenerationResult
    extra: dict[str, Any]  # index, prompt, index_version, citations, grades, cache
    cache_similarity: float | None = None  # set on a cache hit
    cache_missed: bool = False  # the cache was asked and had no answer (so this one is stored)
    context: list[str] = field(default_factory=list)  # the passages the answer was grounded on, whole

    @property
    def text(self) -> str:
        return self.result.choices[0].text if self.result.choices else ""

    @property
    def cacheable(self) -> bool:
        """Only whole answers are cached: not a withheld one, not a hit again."""
        filtered = any(c.finish_reason == "content_filter" for c in self.result.choices)
        return self.cache_similarity is None and bool(self.result.choices) and not filtered


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


def answer_headers(outcome: Outcome, started: float | None = None) -> dict[str, str]:
    """The backend, the cache's verdict (and similarity on a hit), groundedness, and the gateway's
    own time in `server-timing` (what a client measures beyond it is the HTTP proxy's hop)."""
    headers = backend_header(outcome.result.backend)
    if outcome.cache_similarity is not None:
        headers |= {"x-rayrag-cache": "hit", "x-rayrag-cache-similarity": f"{outcome.cache_similarity:.4f}"}
    elif outcome.cache_missed:
        headers["x-rayrag-cache"] = "miss"
    if "grades" in outcome.extra:
        headers["x-rayrag-grounded"] = "yes" if outcome.extra["grades"]["grounded"] else "no"
    if started is not None:
        headers["server-timing"] = f"gateway;dur={(time.perf_counter() - started) * 1000:.2f}"
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
