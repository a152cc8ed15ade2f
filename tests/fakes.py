"""Deterministic stand-ins for what cannot be provoked on demand with real engines: a generator
that is slow, overloaded, dead or not ready exactly when a router test needs it to be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, GeneratorStatus, Usage


class FakeGenerator:
    """Answers `"<backend> says hi"` (or `text`); `fail` is raised by the first `fail_times` calls
    (every call when None), `delay_s` delays the (first) answer."""

    def __init__(
        self,
        backend: str,
        model: str = "m",
        ready: bool = True,
        fail: Exception | None = None,
        delay_s: float = 0.0,
        fail_times: int | None = None,
        text: str | None = None,
    ) -> None:
        self.backend, self.model, self.ready, self.fail, self.delay_s = backend, model, ready, fail, delay_s
        self.fail_times, self.text = fail_times, text
        self.calls = 0
        self.requests: list[GenerationRequest] = []

    def _maybe_fail(self, request: GenerationRequest) -> None:
        self.calls += 1
        self.requests.append(request)
        if self.fail and (self.fail_times is None or self.calls <= self.fail_times):
            raise self.fail

    async def status(self) -> GeneratorStatus:
        return GeneratorStatus(backend=self.backend, model=self.model, ready=self.ready)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        await asyncio.sleep(self.delay_s)
        self._maybe_fail(request)
        text = self.text or f"{self.backend} says hi"
        return GenerationResult(
            model=self.model,
            backend=self.backend,
            choices=[Choice(index=0, text=text, finish_reason="stop")],
            usage=Usage(prompt_tokens=3, completion_tokens=3),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        await asyncio.sleep(self.delay_s)
        self._maybe_fail(request)
        for word in (self.backend, " says", " hi"):
            yield Delta(text=word, backend=self.backend)
        yield Delta(backend=self.backend, usage=Usage(prompt_tokens=3, completion_tokens=3))
