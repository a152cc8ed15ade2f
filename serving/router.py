"""The router: the primary generator first, the quantized fallback when the primary cannot answer.

It leaves the primary when it is not ready (cold start, failed start), overloaded (this router
already has `max_queue_depth` requests in flight to it), too slow (no answer, or no first token,
within `timeout_s`) or failing with a server-side error (dead engine, lost replica). A client
error (a 4xx: prompt too long, bad parameters) is raised at once: another backend would reject it
too. Every result names the backend that produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from serving.config import RouterConfig
from serving.errors import GenerationTimeout, ModelNotFound, NotReady, Overloaded, RetryableError, ServingError, unwrap
from serving.generator.protocol import Delta, GenerationRequest, GenerationResult, GeneratorStatus

log = logging.getLogger(__name__)


class HandleBackend:
    """A Serve deployment handle seen through the Generator protocol."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.handle.generate.remote(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        return self.handle.options(stream=True).stream.remote(request)

    async def status(self) -> GeneratorStatus:
        return await self.handle.status.remote()


def as_backend(target: Any) -> Any:
    from ray.serve.handle import DeploymentHandle

    return HandleBackend(target) if isinstance(target, DeploymentHandle) else target


def is_client_error(exc: BaseException) -> bool:
    """True for errors no other backend would answer differently."""
    return isinstance(exc, ServingError) and not isinstance(exc, RetryableError) and exc.status < 500


@dataclass
class Slot:
    """One backend in the chain with what the router knows of it."""

    role: str
    backend: Any
    status: GeneratorStatus | None = None
    in_flight: int = 0


class Router:
    def __init__(self, config: RouterConfig, primary: Any = None, fallback: Any = None) -> None:
        self.config = config
        self.slots = [
            Slot(role, as_backend(b)) for role, b in (("primary", primary), ("fallback", fallback)) if b is not None
        ]
        self._poller: asyncio.Task | None = None

    # -- what the backends can do ----------------------------------------------------------------

    async def _refresh(self, slot: Slot) -> None:
        try:
            slot.status = await asyncio.wait_for(slot.backend.status(), self.config.status_interval_s * 2)
        except Exception as exc:  # noqa: BLE001 - an unreachable backend is simply not ready
            name = slot.status.model if slot.status else "?"
            slot.status = GeneratorStatus(backend=slot.role, model=name, ready=False, error=f"status: {exc!r}")

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._refresh(slot) for slot in self.slots))
            await asyncio.sleep(self.config.status_interval_s)

    async def _ensure_status(self) -> None:
        if self._poller is None:
            await asyncio.gather(*(self._refresh(slot) for slot in self.slots))
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def models(self) -> list[GeneratorStatus]:
        await self._ensure_status()
        return [slot.status for slot in self.slots if slot.status is not None]

    def _skip_reason(self, slot: Slot) -> RetryableError | None:
        if slot.status is None or not slot.status.ready:
            return NotReady(f"{slot.role} not ready: {slot.status.error if slot.status else 'no status yet'}")
        if slot.in_flight >= self.config.max_queue_depth:
            return Overloaded(f"{slot.role} has {slot.in_flight} requests in flight")
        return None

    async def _plan(self, model: str | None) -> list[Slot]:
        await self._ensure_status()
        names = {slot.status.model for slot in self.slots if slot.status}
        if model is not None and model not in names:
            raise ModelNotFound(f"model {model!r} does not exist; served: {sorted(names)}", param="model")
        return self.slots

    # -- generation ------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, model: str | None = None) -> GenerationResult:
        last: Exception = NotReady("no generator configured")
        for slot in await self._plan(model):
            if (reason := self._skip_reason(slot)) is not None and slot is not self.slots[-1]:
                last = reason
                continue
            try:
                with self._counting(slot):
                    return await asyncio.wait_for(slot.backend.generate(request), self.config.timeout_s)
            except Exception as exc:  # noqa: BLE001 - classified by _fall_or_raise (client errors re-raised)
                last = self._fall_or_raise(slot, exc)
        raise last

    async def stream(self, request: GenerationRequest, model: str | None = None) -> AsyncIterator[Delta]:
        """Stream from the first backend that yields a first token in time; once tokens flow, stay."""
        last: Exception = NotReady("no generator configured")
        for slot in await self._plan(model):
            if (reason := self._skip_reason(slot)) is not None and slot is not self.slots[-1]:
                last = reason
                continue
            with self._counting(slot):
                stream = slot.backend.stream(request)
                try:
                    first = await asyncio.wait_for(anext(stream), self.config.timeout_s)
                except Exception as exc:  # noqa: BLE001 - classified by _fall_or_raise (client errors re-raised)
                    last = self._fall_or_raise(slot, exc)
                    with contextlib.suppress(Exception):
                        await _close(stream)
                    continue
                yield first
                async for delta in stream:
                    yield delta
                return
        raise last

    @contextlib.contextmanager
    def _counting(self, slot: Slot):
        slot.in_flight += 1
        try:
            yield
        finally:
            slot.in_flight -= 1

    def _fall_or_raise(self, slot: Slot, exc: Exception) -> Exception:
        """Re-raise client errors; turn anything else into the reason to try the next backend."""
        exc = unwrap(exc)
        if is_client_error(exc):
            raise exc
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            exc = GenerationTimeout(f"{slot.role} gave no answer within {self.config.timeout_s}s")
        log.warning("router: %s failed (%s: %s); trying the next backend", slot.role, type(exc).__name__, exc)
        if slot.status is not None and not isinstance(exc, Overloaded | GenerationTimeout):
            slot.status = slot.status.model_copy(update={"ready": False, "error": str(exc)[:200]})
        return exc if isinstance(exc, ServingError) else RetryableError(f"{slot.role} failed: {exc}")


async def _close(stream: Any) -> None:
    if hasattr(stream, "aclose"):
        await stream.aclose()
    elif hasattr(stream, "cancel"):
        stream.cancel()
