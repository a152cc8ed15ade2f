"""Deterministic stand-ins for what cannot be provoked on demand with real engines: a generator
that is slow, overloaded, dead or not ready exactly when a router test needs it to be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, GeneratorStatus, Usage


class FakeGenerator:
    """Answers `"<backend> says hi"`; `fail` is raised by calls, `delay_s` delays the (first) answer."""

    def __init__(
        self, backend: str, model: str = "m", ready: bool = True, fail: Exception | None = None, delay_s: float = 0.0
    ) -> None:
        self.backend, self.model, self.ready, self.fail, self.delay_s = backend, model, ready, fail, delay_s
        self.calls = 0

    async def status(self) -> GeneratorStatus:
        return GeneratorStatus(backend=self.backend, model=self.model, ready=self.ready)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise self.fail
        text = f"{self.backend} says hi"
        return GenerationResult(
            model=self.model,
            backend=self.backend,
            choices=[Choice(index=0, text=text, finish_reason="stop")],
            usage=Usage(prompt_tokens=3, completion_tokens=3),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise self.fail
        for word in (self.backend, " says", " hi"):
            yield Delta(text=word, backend=self.backend)
        yield Delta(backend=self.backend, usage=Usage(prompt_tokens=3, completion_tokens=3))
