"""Deterministic stand-ins for what cannot be provoked on demand with real engines: a generator
that is slow, overloaded, dead or not ready exactly when a router test needs it to be, and a
retriever with fixed passages and word-hash vectors for the answer flow's unit tier."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

import numpy as np

from serving.errors import NotFound
from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, GeneratorStatus, Usage
from serving.protocol import DocumentResult, Passage, PassageResult, ScoredChunk, SearchRequest, SearchResult


class FakeGenerator:
    """Answers `"<backend> says hi"` (or `text`, or what `reply(request)` returns); `fail` is raised by
    the first `fail_times` calls (every call when None), `delay_s` delays the (first) answer."""

    def __init__(
        self,
        backend: str,
        model: str = "m",
        ready: bool = True,
        fail: Exception | None = None,
        delay_s: float = 0.0,
        fail_times: int | None = None,
        text: str | None = None,
        reply: Callable[[GenerationRequest], str | None] | None = None,
    ) -> None:
        self.backend, self.model, self.ready, self.fail, self.delay_s = backend, model, ready, fail, delay_s
        self.fail_times, self.text, self.reply = fail_times, text, reply
        self.calls = 0
        self.closed_early = 0  # streams whose consumer stopped reading before the end
        self.requests: list[GenerationRequest] = []

    def _maybe_fail(self, request: GenerationRequest) -> None:
        self.calls += 1
        self.requests.append(request)
        if self.fail and (self.fail_times is None or self.calls <= self.fail_times):
            raise self.fail

    async def status(self) -> GeneratorStatus:
        return GeneratorStatus(backend=self.backend, model=self.model, ready=self.ready)

    async def wait_ready(self, timeout_s: float) -> GeneratorStatus:
        """A fake is up or not from the start: its status at once (a test that needs the wait replaces this)."""
        return await self.status()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        await asyncio.sleep(self.delay_s)
        self._maybe_fail(request)
        text = (self.reply and self.reply(request)) or self.text or f"{self.backend} says hi"
        return GenerationResult(
            model=self.model,
            backend=self.backend,
            choices=[Choice(index=0, text=text, finish_reason="stop")],
            usage=Usage(prompt_tokens=3, completion_tokens=len(text.split(" "))),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """One delta per word (one token each), then the usage; counts consumers that stop early."""
        await asyncio.sleep(self.delay_s)
        self._maybe_fail(request)
        words = (self.text or f"{self.backend} says hi").split(" ")
        finished = False
        try:
            for n, word in enumerate(words):
                text = word if n == 0 else f" {word}"
                yield Delta(text=text, backend=self.backend, tokens=1, prompt_tokens=3)
            finished = True
            yield Delta(backend=self.backend, usage=Usage(prompt_tokens=3, completion_tokens=len(words)))
        finally:
            self.closed_early += 0 if finished else 1


def word_vector(text: str, dim: int = 64) -> np.ndarray:
    """A unit bag-of-words vector: the same words give the same vector, different ones nearly orthogonal."""
    vector = np.zeros(dim, dtype=np.float32)
    for word in text.lower().split():
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vector / (np.linalg.norm(vector) or 1.0)


class FakeRetriever:
    """The retriever port with fixed passages: every search finds them, in order; records its calls."""

    PASSAGES = (
        ("volcanoes.md", "Volcanoes", "A volcano is a rupture in the crust through which lava escapes."),
        ("tides.md", "Ocean tides", "Tides are the rise and fall of sea levels caused by the Moon."),
    )

    def __init__(self, index: str = "test", version: str = "v1") -> None:
        self.index, self.version = index, version
        self.searches: list[tuple[SearchRequest, list[float] | None]] = []
        self.embedded: list[str] = []

    async def search(self, request: SearchRequest, vector: list[float] | None = None) -> SearchResult:
        self.searches.append((request, vector))
        chunks = [
            ScoredChunk(**self._passage(n).model_dump(), score=1.0 - n / 10)
            for n in range(min(len(self.PASSAGES), request.top_k or 5))
        ]
        return SearchResult(index=request.index, version=self.version, mode="dense", reranked=False, took_ms=0.1,
                            chunks=chunks)  # fmt: skip

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        self.embedded += texts
        return [word_vector(t).tolist() for t in texts], sum(len(t.split()) for t in texts)

    async def describe(self) -> dict[str, dict]:
        return {self.index: {"version": self.version, "chunks": 2, "embedder": "fake-embedder", "error": None}}

    def _passage(self, n: int) -> Passage:
        source, title, text = self.PASSAGES[n]
        return Passage(chunk_id=f"{n:016x}", source=source, title=title, section=None, page=None, start=0,
                       end=len(text), text=text)  # fmt: skip

    async def passage(self, index: str, chunk_id: str) -> PassageResult:
        found = [p for n in range(len(self.PASSAGES)) if (p := self._passage(n)).chunk_id == chunk_id]
        if index != self.index or not found:
            raise NotFound(f"no chunk {chunk_id!r}", param="chunk_id", code="chunk_not_found")
        return PassageResult(index=index, version=self.version, passage=found[0])

    async def document(self, index: str, source: str) -> DocumentResult:
        found = [p for n in range(len(self.PASSAGES)) if (p := self._passage(n)).source == source]
        if index != self.index or not found:
            raise NotFound(f"no document {source!r}", param="source", code="document_not_found")
        return DocumentResult(index=index, version=self.version, source=source, title=found[0].title,
                              sections=found, truncated=False)  # fmt: skip


class KeywordReranker:
    """A reranker whose scores are known by construction: how many of the query's words the passage
    holds. It tests the rerank mode's plumbing (candidates in, reordered by score, scores reported);
    no cross-encoder with known quality ships in a package here, so rerank quality is not tested."""

    def predict(self, pairs, batch_size: int = 32, show_progress_bar: bool = False) -> list[float]:
        return [float(sum(word in text.lower() for word in query.lower().split())) for query, text in pairs]


class FakeJobs:
    """Ray's job API for the ingest unit tier: jobs stay RUNNING until `finish` writes their report
    where `rayrag index --report-out` would."""

    def __init__(self) -> None:
        self.submitted: dict[str, tuple[str, dict[str, str]]] = {}  # job id -> (entrypoint, metadata)
        self.states: dict[str, str] = {}

    def submit(self, job_id: str, entrypoint: str, metadata: dict[str, str]) -> None:
        self.submitted[job_id] = (entrypoint, metadata)
        self.states[job_id] = "RUNNING"

    def status(self, job_id: str) -> tuple[str, str | None, dict[str, str]] | None:
        return (self.states[job_id], None, self.submitted[job_id][1]) if job_id in self.states else None

    def active(self, metadata: dict[str, str]) -> str | None:
        running = (j for j, s in self.states.items() if s == "RUNNING" and self.submitted[j][1] == metadata)
        return next(running, None)

    def finish(self, job_id: str, report_at: str, report: dict) -> None:
        import json
        from pathlib import Path

        Path(report_at).parent.mkdir(parents=True, exist_ok=True)
        Path(report_at).write_text(json.dumps(report))
        self.states[job_id] = "SUCCEEDED"
