"""What both generator backends share: in-flight counting and the status the router reads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from serving.errors import InvalidRequest
from serving.generator.protocol import GenerationRequest, GeneratorStatus
from serving.telemetry.quiet import quiet_polls

STARTED_POLL_S = 0.25


class GeneratorBase:
    """Tracks requests in flight and the engine's readiness; subclasses set `backend`, `model`."""

    backend = "generator"

    def __init__(self, model: str, max_context: int) -> None:
        self.model = model
        self.max_context = max_context
        self.running = 0
        self.ready = False
        self.error: str | None = None
        self.started = threading.Event()  # set once the engine is up or has failed to start: wait_ready
        self.cancelled = 0  # streams whose consumer stopped reading before the end (engine work aborted)
        quiet_polls()  # the router's status poll every second stays out of the console

    async def status(self) -> GeneratorStatus:
        return GeneratorStatus(
            backend=self.backend, model=self.model, ready=self.ready, error=self.error, running=self.running,
            cancelled=self.cancelled,
        )

    async def wait_ready(self, timeout_s: float) -> GeneratorStatus:
        """The status once the engine is up or has failed (or after `timeout_s`): the call that wakes
        a generator scaled to zero. Serve's autoscaler counts it in flight for as long as it waits, so
        the replica it started is not scaled back to zero while its engine loads; `status()` would be
        answered at once by the new replica, and on a slow CPU Serve stopped it, engine still loading,
        before the router ever saw it ready."""
        deadline = time.monotonic() + timeout_s
        while not self.started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(STARTED_POLL_S)  # the engine thread sets it; no executor thread held per wake
        return await self.status()

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    @contextmanager
    def _counting_cancelled(self) -> Iterator[None]:
        try:
            yield
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise

    def _check_length(self, prompt_tokens: int, request: GenerationRequest) -> None:
        """A prompt that cannot fit is the client's error (400), not a reason to fall back."""
        if prompt_tokens + 1 > self.max_context:
            raise InvalidRequest(
                f"prompt is {prompt_tokens} tokens; model {self.model!r} has a context of {self.max_context}",
                param="messages" if request.messages else "prompt",
                code="context_length_exceeded",
            )
