"""The router: the configured fallback chain, e.g. vLLM -> quantized llama.cpp -> extractive answer.

Each step is tried in order. A step is skipped when it is not ready (cold start, failed start),
overloaded (this router already has the step's `max_queue_depth`, else the router's, in flight to
it: a burst spills down the chain instead of queueing on one step), its circuit is open (it failed
`breaker.failures` times in a row; pybreaker lets one trial through after `breaker.reset_s`), or it
cannot answer this request (the extractive step needs retrieved passages). A server-side failure
is retried on the same step with exponential backoff and jitter (tenacity, `retries` times), then
the next step is tried; a timeout (no answer, or no first token, within the step's `timeout_s`)
moves on at once. A client error (a 4xx: prompt too long, bad parameters) is raised at once and
never retried: another attempt would be refused too.
Every result names its backend and the steps taken to reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from serving.checks.auth import Forbidden
from serving.config import ChainStep, RouterConfig
from serving.errors import GenerationTimeout, ModelNotFound, NotReady, Overloaded, RetryableError, ServingError, unwrap
from serving.generator.extractive import ExtractiveGenerator
from serving.generator.protocol import Delta, GenerationRequest, GenerationResult, GeneratorStatus
from serving.telemetry import metrics
from serving.telemetry.quiet import quiet_polls

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

    async def wait_ready(self, timeout_s: float) -> GeneratorStatus:
        return await self.handle.wait_ready.remote(timeout_s)


def as_backend(target: Any) -> Any:
    from ray.serve.handle import DeploymentHandle

    return HandleBackend(target) if isinstance(target, DeploymentHandle) else target


def is_client_error(exc: BaseException) -> bool:
    """True for errors no other attempt or backend would answer differently."""
    exc = unwrap(exc)
    return isinstance(exc, ServingError) and not isinstance(exc, RetryableError) and exc.status < 500


def _not_a_failure(exc: BaseException) -> bool:
    """What the circuit breaker ignores: client errors and cancelled requests."""
    return is_client_error(exc) or isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _worth_retrying(exc: BaseException) -> bool:
    """Retry server-side failures on the same step; a timeout or an open circuit moves on instead."""
    exc = unwrap(exc)
    slow = isinstance(exc, TimeoutError | asyncio.TimeoutError | GenerationTimeout)
    return not (slow or is_client_error(exc) or isinstance(exc, pybreaker.CircuitBreakerError))


def _quotes(slot: Slot) -> bool:
    """The extractive step: part of the chain, but not a model anyone can call by name."""
    return isinstance(slot.backend, ExtractiveGenerator)


def _allowed(slot: Slot, request: GenerationRequest) -> bool:
    """Whether the caller's key may use this step's model (RAG routes, where the router picks)."""
    allowed = request.allowed_models
    return allowed is None or (slot.status is not None and slot.status.model in allowed)


def _still_open(breaker: pybreaker.CircuitBreaker) -> bool:
    """Open and within `reset_timeout` (after it, pybreaker lets the next call through as a trial)."""
    opened = breaker._state_storage.opened_at
    if breaker.current_state != pybreaker.STATE_OPEN or opened is None:
        return False
    return datetime.now(UTC) < opened + timedelta(seconds=breaker.reset_timeout)


@dataclass
class Slot:
    """One step of the chain with what the router knows of it."""

    step: ChainStep
    backend: Any
    breaker: pybreaker.CircuitBreaker
    timeout_s: float
    status: GeneratorStatus | None = None
    in_flight: int = 0
    missed: int = 0  # status polls in a row that timed out
    log: list[str] = field(default_factory=list)
    waking: asyncio.Task | None = None  # the call that makes Serve start a scaled-to-zero generator

    @property
    def role(self) -> str:
        return self.step.backend


async def serve_replicas(deployment: str) -> int:
    """Running replicas of `deployment` in this replica's application, as Serve's controller has them."""

    def count() -> int:
        from ray import serve

        app = serve.get_replica_context().app_name
        return serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0)

    return await asyncio.to_thread(count)  # a blocking call to the controller: off the event loop


class Router:
    """`cold` maps a chain role to (its Serve deployment, its model's name) when that generator may
    scale to zero: its readiness is then read from Serve's replica count, never by calling it (a call
    to a deployment at zero replicas is what makes Serve start one), and the first request that finds
    it at zero wakes it with one call in the background while the next step answers."""

    def __init__(
        self, config: RouterConfig, primary: Any = None, fallback: Any = None,
        cold: dict[str, tuple[str, str]] | None = None,
        replicas: Callable[[str], Awaitable[int]] = serve_replicas,
    ) -> None:  # fmt: skip
        self.config = config
        backends = {"primary": primary, "fallback": fallback, "extractive": ExtractiveGenerator()}
        self.slots = [self._slot(step, backends[step.backend]) for step in config.steps()]
        self.slots = [slot for slot in self.slots if slot.backend is not None]
        self.cold, self._replicas = cold or {}, replicas
        quiet_polls()
        self._poller: asyncio.Task | None = None

    def _slot(self, step: ChainStep, backend: Any) -> Slot:
        breaker = pybreaker.CircuitBreaker(
            fail_max=self.config.breaker.failures,
            reset_timeout=self.config.breaker.reset_s,
            exclude=[_not_a_failure],
            throw_new_error_on_trip=False,
            name=step.backend,
        )
        timeout = step.timeout_s or self.config.timeout_s
        return Slot(step, None if backend is None else as_backend(backend), breaker, timeout)

    # -- what the backends can do ----------------------------------------------------------------

    async def _refresh(self, slot: Slot) -> None:
        if slot.role in self.cold and await self._scaled_to_zero(slot):
            deployment, model = self.cold[slot.role]
            slot.status = GeneratorStatus(backend=deployment, model=model, ready=False, scaled_to_zero=True)
            return
        try:
            slot.status = await asyncio.wait_for(slot.backend.status(), self.config.status_interval_s * 2)
            slot.missed = 0
        except TimeoutError:  # late, not gone: a generator busy on every core keeps its last status a while
            slot.missed += 1
            if slot.status is None or slot.missed >= self.config.status_misses:
                self._not_ready(slot, f"status: no answer in {slot.missed} polls")
        except Exception as exc:  # noqa: BLE001 - an unreachable backend is simply not ready
            self._not_ready(slot, f"status: {exc!r}")

    @staticmethod
    def _not_ready(slot: Slot, error: str) -> None:
        name = slot.status.model if slot.status else "?"
        slot.status = GeneratorStatus(backend=slot.role, model=name, ready=False, error=error)

    async def _scaled_to_zero(self, slot: Slot) -> bool:
        try:
            return await self._replicas(self.cold[slot.role][0]) == 0
        except Exception as exc:  # noqa: BLE001 - no count from Serve: read its status as for any step
            log.warning("replicas of %s unknown: %r", self.cold[slot.role][0], exc)
            return False

    def _wake(self, slot: Slot) -> None:
        """One call to a generator at zero replicas, in the background: Serve starts a replica for it,
        and the call (`wait_ready`) stays in flight until the replica's engine is up, so the autoscaler
        keeps that replica while the model loads. A call answered at once (`status`) left it no request
        in flight: on a 2-core AVX2 host Serve scaled the vLLM replica back to zero 63 s into its load."""
        if slot.waking is None or slot.waking.done():
            wait = max(slot.timeout_s, 600.0)  # a model's start takes minutes
            call = slot.backend.wait_ready(wait)
            slot.waking = asyncio.get_running_loop().create_task(asyncio.wait_for(call, wait + 60))
            slot.waking.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen, not logged

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._refresh(slot) for slot in self.slots))
            await asyncio.sleep(self.config.status_interval_s)

    async def _ensure_status(self) -> None:
        if self._poller is None:
            await asyncio.gather(*(self._refresh(slot) for slot in self.slots))
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def breakers(self) -> dict[str, str]:
        """Each step's circuit state (closed, open, half-open): what the hardening tests watch."""
        return {slot.role: slot.breaker.current_state for slot in self.slots}

    async def models(self) -> list[GeneratorStatus]:
        await self._ensure_status()
        return [slot.status for slot in self.slots if slot.status is not None]

    def _skip_reason(self, slot: Slot, last: Slot) -> str | None:
        if slot is last:
            return None  # the last step that applies is always tried: its own error is the answer
        if slot.status is not None and slot.status.scaled_to_zero:
            self._wake(slot)
            return "scaled to zero: starting it"
        if slot.status is None or not slot.status.ready:
            # a category only: the engine's own error text is in the log, never in a response
            return f"not ready: {'failed' if slot.status and slot.status.error else 'starting'}"
        if slot.in_flight >= (slot.step.max_queue_depth or self.config.max_queue_depth):
            return f"overloaded: {slot.in_flight} in flight"
        if _still_open(slot.breaker):
            return "circuit open"
        return None

    async def _plan(self, model: str | None, request: GenerationRequest) -> list[Slot]:
        """The steps that can answer this request (the extractive one needs retrieved passages)."""
        await self._ensure_status()
        names = {slot.status.model for slot in self.slots if slot.status and not _quotes(slot)}
        if model is not None and model not in names:
            raise ModelNotFound(f"model {model!r} does not exist; served: {sorted(names)}", param="model")
        plan = [s for s in self.slots if (s.backend.applies(request) if _quotes(s) else _allowed(s, request))]
        if not plan and request.allowed_models is not None:
            raise Forbidden("this key may use none of the models that could answer", param="model")
        return plan

    def _retrying(self, slot: Slot) -> AsyncRetrying:
        retry = self.config.retry
        return AsyncRetrying(
            stop=stop_after_attempt(slot.step.retries + 1),
            wait=wait_exponential_jitter(initial=retry.initial_s, max=retry.max_s, jitter=retry.jitter_s),
            retry=retry_if_exception(_worth_retrying),
            reraise=True,
        )

    async def _attempt(self, slot: Slot, call: Callable[[], Awaitable[Any]]) -> Any:
        """One call through the slot's circuit breaker, counted in flight, within its timeout."""
        with slot.breaker.calling(), self._counting(slot):
            return await asyncio.wait_for(call(), slot.timeout_s)

    # -- generation ------------------------------------------------------------------------------

    async def _first_success(
        self, request: GenerationRequest, model: str | None, call: Callable[[Slot], Awaitable[Any]]
    ) -> tuple[Slot, Any, list[str]]:
        """Walk the chain: the first step whose `call` succeeds (retried as configured), what it
        returned, and the steps taken; the last step's error when none does."""
        steps: list[str] = []
        last: Exception = NotReady("no step of the chain can answer")
        plan = await self._plan(model, request)
        for slot in plan:
            if (reason := self._skip_reason(slot, plan[-1])) is not None:
                steps.append(f"{slot.role}: skipped ({reason})")
                metrics.fallbacks().inc(1, {"step": slot.role, "outcome": "skipped"})
                continue
            try:
                async for attempt in self._retrying(slot):
                    with attempt:
                        value = await call(slot)
                return slot, value, [*steps, f"{slot.role}: answered"]
            except Exception as exc:  # noqa: BLE001 - classified by _fall_or_raise (client errors re-raised)
                last = self._fall_or_raise(slot, exc)
                steps.append(f"{slot.role}: failed ({type(last).__name__})")
                metrics.fallbacks().inc(1, {"step": slot.role, "outcome": "failed"})
        raise last

    async def generate(self, request: GenerationRequest, model: str | None = None) -> GenerationResult:
        call = lambda slot: self._attempt(slot, lambda: slot.backend.generate(request))  # noqa: E731
        _, result, steps = await self._first_success(request, model, call)
        return result.model_copy(update={"steps": steps})

    async def stream(self, request: GenerationRequest, model: str | None = None) -> AsyncIterator[Delta]:
        """Stream from the first step that yields a first token in time; once tokens flow, stay."""
        slot, (stream, first), steps = await self._first_success(
            request, model, lambda slot: self._first_token(slot, request)
        )
        started = time.perf_counter()
        try:
            with self._counting(slot):
                async for delta in _chain(first, stream):
                    if delta.usage is not None:
                        _observe_rate(delta, time.perf_counter() - started)
                    yield delta.model_copy(update={"steps": steps}) if delta.usage is not None else delta
        finally:  # a consumer that stops reading (disconnect, content filter) stops the engine too
            with contextlib.suppress(Exception):
                await _close(stream)

    async def _first_token(self, slot: Slot, request: GenerationRequest) -> tuple[AsyncIterator[Delta], Delta]:
        stream, started = slot.backend.stream(request), time.perf_counter()
        try:
            first = await self._attempt(slot, lambda: anext(stream))
            metrics.ttft_seconds().observe(time.perf_counter() - started, {"backend": first.backend or slot.role})
            return stream, first
        except BaseException:
            with contextlib.suppress(Exception):
                await _close(stream)
            raise

    @contextlib.contextmanager
    def _counting(self, slot: Slot):
        slot.in_flight += 1
        metrics.in_flight().set(slot.in_flight, {"step": slot.role})
        try:
            yield
        finally:
            slot.in_flight -= 1
            metrics.in_flight().set(slot.in_flight, {"step": slot.role})

    def _fall_or_raise(self, slot: Slot, exc: Exception) -> Exception:
        """Re-raise client errors; turn anything else into the reason to try the next step."""
        exc = unwrap(exc)
        if is_client_error(exc):
            raise exc
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            exc = GenerationTimeout(f"{slot.role} gave no answer within {slot.timeout_s}s")
        if isinstance(exc, pybreaker.CircuitBreakerError):
            exc = NotReady(f"{slot.role} is skipped: its circuit is open after repeated failures")
        log.warning("router: %s failed (%s: %s); trying the next step", slot.role, type(exc).__name__, exc)
        if slot.status is not None and not isinstance(exc, Overloaded | GenerationTimeout | NotReady):
            slot.status = slot.status.model_copy(update={"ready": False, "error": str(exc)[:200]})
        return exc if isinstance(exc, ServingError) else RetryableError(f"{slot.role} failed ({type(exc).__name__})")


def _observe_rate(last: Delta, seconds: float) -> None:
    """Completion tokens per second of a whole stream (the last delta carries its usage)."""
    if seconds > 0 and last.usage.completion_tokens:
        metrics.tokens_per_second().observe(last.usage.completion_tokens / seconds, {"backend": last.backend})


async def _chain(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    yield first
    async for delta in rest:
        yield delta


async def _close(stream: Any) -> None:
    if hasattr(stream, "aclose"):
        await stream.aclose()
    elif hasattr(stream, "cancel"):
        stream.cancel()
