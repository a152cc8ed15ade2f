"""The router's fallback rules, with generators that fail on cue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from serving.config import RouterConfig
from serving.errors import EngineDead, InvalidRequest, ModelNotFound
from serving.generator.base import GeneratorBase
from serving.generator.protocol import GenerationRequest
from serving.router import Router
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.unit
REQUEST = GenerationRequest(prompt="hello", max_tokens=4)


def run(coro):
    return asyncio.run(coro)


def answer(router: Router, model: str | None = None):
    return run(router.generate(REQUEST, model))


def streamed(router: Router) -> tuple[str, set[str]]:
    async def collect():
        deltas = [d async for d in router.stream(REQUEST)]
        return "".join(d.text for d in deltas), {d.backend for d in deltas}

    return run(collect())


def test_primary_answers_when_healthy():
    primary, fallback = FakeGenerator("vllm"), FakeGenerator("llama_cpp")
    assert answer(Router(RouterConfig(), primary, fallback)).backend == "vllm"
    assert fallback.calls == 0


@pytest.mark.parametrize(
    "primary",
    [
        FakeGenerator("vllm", ready=False),  # cold start
        FakeGenerator("vllm", fail=EngineDead("engine died")),  # retryable failure
        FakeGenerator("vllm", fail=RuntimeError("replica lost")),  # any server-side failure
        FakeGenerator("vllm", delay_s=1.0),  # too slow
    ],
    ids=["not-ready", "engine-dead", "server-error", "timeout"],
)
def test_falls_back(primary):
    router = Router(RouterConfig(timeout_s=0.2), primary, FakeGenerator("llama_cpp"))
    assert answer(router).backend == "llama_cpp"
    assert streamed(router) == ("llama_cpp says hi", {"llama_cpp"})


def test_client_error_is_not_retried_elsewhere():
    fallback = FakeGenerator("llama_cpp")
    router = Router(RouterConfig(), FakeGenerator("vllm", fail=InvalidRequest("prompt too long")), fallback)
    with pytest.raises(InvalidRequest):
        answer(router)
    assert fallback.calls == 0


def test_overloaded_primary_sends_new_work_to_fallback():
    primary, fallback = FakeGenerator("vllm", delay_s=0.3), FakeGenerator("llama_cpp")
    router = Router(RouterConfig(max_queue_depth=2), primary, fallback)

    async def burst():
        return await asyncio.gather(*(router.generate(REQUEST) for _ in range(5)))

    backends = [r.backend for r in run(burst())]
    assert backends.count("vllm") == 2 and backends.count("llama_cpp") == 3


def test_a_steps_own_queue_depth_spills_its_burst_before_the_routers_would():
    """The primary's step holds two; the router's default (8) would have queued all five there."""
    primary, fallback = FakeGenerator("vllm", delay_s=0.3), FakeGenerator("llama_cpp")
    chain = [{"backend": "primary", "max_queue_depth": 2}, {"backend": "fallback"}]
    router = Router(RouterConfig(chain=chain), primary, fallback)

    async def burst():
        return await asyncio.gather(*(router.generate(REQUEST) for _ in range(5)))

    results = run(burst())
    assert [r.backend for r in results].count("vllm") == 2
    spilled = [r.steps for r in results if r.backend == "llama_cpp"]
    assert spilled == [["primary: skipped (overloaded: 2 in flight)", "fallback: answered"]] * 3


def test_unknown_model_is_404_and_the_last_backend_is_tried_even_if_unready():
    router = Router(RouterConfig(), FakeGenerator("vllm", model="big"), FakeGenerator("llama_cpp", model="small"))
    with pytest.raises(ModelNotFound):
        answer(router, "nope")
    assert answer(router, "small").backend == "vllm"  # the chain is primary-first whatever the name
    lonely = Router(RouterConfig(), None, FakeGenerator("llama_cpp", ready=False))
    assert answer(lonely).backend == "llama_cpp"


FAST_RETRY = {"retry": {"initial_s": 0.01, "max_s": 0.02, "jitter_s": 0.01}}
GROUNDED = GenerationRequest(
    messages=[{"role": "user", "content": "When do spring tides happen?"}],
    context=[
        "# Ocean tides\n\nTides are the rise and fall of sea levels. Spring tides happen at new and full moon.",
        "Sourdough is bread leavened by a starter of wild yeast.",
    ],
)


def test_a_transient_failure_is_retried_on_the_same_step():
    primary = FakeGenerator("vllm", fail=EngineDead("blip"), fail_times=1)
    result = answer(Router(RouterConfig(**FAST_RETRY), primary, FakeGenerator("llama_cpp")))
    assert result.backend == "vllm" and primary.calls == 2
    assert result.steps == ["primary: answered"]


def test_retries_are_bounded_then_the_next_step_answers():
    primary = FakeGenerator("vllm", fail=EngineDead("down"))
    config = RouterConfig(chain=[{"backend": "primary", "retries": 2}, {"backend": "fallback"}], **FAST_RETRY)
    result = answer(Router(config, primary, FakeGenerator("llama_cpp")))
    assert primary.calls == 3 and result.backend == "llama_cpp"
    assert result.steps == ["primary: failed (EngineDead)", "fallback: answered"]


def test_a_client_error_is_never_retried():
    primary = FakeGenerator("vllm", fail=InvalidRequest("bad"))
    with pytest.raises(InvalidRequest):
        answer(Router(RouterConfig(chain=[{"backend": "primary", "retries": 3}], **FAST_RETRY), primary))
    assert primary.calls == 1


def test_the_circuit_opens_after_repeated_failures_and_closes_after_reset():
    primary, fallback = FakeGenerator("vllm", fail=EngineDead("down")), FakeGenerator("llama_cpp")
    config = RouterConfig(
        breaker={"failures": 2, "reset_s": 60}, chain=[{"backend": "primary", "retries": 0}, {"backend": "fallback"}]
    )
    router = Router(config, primary, fallback)

    async def scenario():
        for _ in range(2):
            await router.generate(REQUEST)
        router.slots[0].status = router.slots[0].status.model_copy(update={"ready": True})  # the poller says up
        skipped = await router.generate(REQUEST)
        calls_while_open = primary.calls
        storage = router.slots[0].breaker._state_storage  # as if reset_s had passed: no waiting
        storage.opened_at = storage.opened_at - timedelta(seconds=61)
        primary.fail = None
        recovered = await router.generate(REQUEST)
        return skipped, calls_while_open, recovered

    skipped, calls_while_open, recovered = run(scenario())
    assert calls_while_open == 2 and skipped.steps[0] == "primary: skipped (circuit open)"
    assert recovered.backend == "vllm"


def test_extractive_step_answers_from_the_passages_when_every_generator_is_down():
    router = Router(
        RouterConfig(**FAST_RETRY),
        FakeGenerator("vllm", fail=EngineDead("down")),
        FakeGenerator("llama_cpp", fail=RuntimeError("replica lost")),
    )
    result = run(router.generate(GROUNDED))
    assert result.backend == "extractive"
    text = result.choices[0].text
    assert "Spring tides happen at new and full moon. [1]" in text and "Sourdough" not in text
    assert result.steps == ["primary: failed (EngineDead)", "fallback: failed (RetryableError)", "extractive: answered"]

    async def collect():
        return [d async for d in router.stream(GROUNDED)]

    deltas = run(collect())
    assert deltas[0].text == text and deltas[-1].steps[-1] == "extractive: answered"


def test_extractive_step_does_not_apply_without_passages_or_in_json_mode():
    router = Router(
        RouterConfig(breaker={"failures": 10}, **FAST_RETRY), FakeGenerator("vllm", fail=EngineDead("down"))
    )
    with pytest.raises(EngineDead):
        answer(router)
    json_mode = GROUNDED.model_copy(update={"response_format": {"type": "json_object"}})
    with pytest.raises(EngineDead):
        run(router.generate(GenerationRequest.model_validate(json_mode.model_dump(by_alias=True))))


def test_a_generator_scaled_to_zero_is_woken_once_while_the_next_step_answers():
    """Its readiness comes from Serve's replica count, never from calling it (a call to a deployment
    at zero replicas is what starts one); the first request that finds it at zero wakes it once, and
    that call stays in flight until the engine is up: Serve's autoscaler keeps a replica only while
    a request is, and a new vLLM replica answers `status()` at once, engine still loading."""
    primary, fallback = FakeGenerator("vllm"), FakeGenerator("llama_cpp")
    woken, replicas, started, engine_up = [], {"vllm": 0}, None, None

    async def wait_ready(timeout_s: float):  # as a Serve handle's call: taken by a replica once one started
        woken.append(timeout_s)
        await started.wait()
        await engine_up.wait()
        return await FakeGenerator.status(primary)

    async def running(deployment: str) -> int:
        return replicas[deployment]

    primary.wait_ready = wait_ready
    router = Router(RouterConfig(), primary, fallback, cold={"primary": ("vllm", "m")}, replicas=running)

    async def scenario():
        nonlocal started, engine_up
        started, engine_up = asyncio.Event(), asyncio.Event()
        await router.models()  # the first poll: at zero, so not called
        assert woken == []
        first = [await router.generate(REQUEST) for _ in range(3)]
        await asyncio.sleep(0)  # the wake call runs
        assert len(woken) == 1 and woken[0] >= 600 and {r.backend for r in first} == {"llama_cpp"}
        assert first[0].steps == ["primary: skipped (scaled to zero: starting it)", "fallback: answered"]
        replicas["vllm"] = 1  # Serve has started it; its engine is loading
        started.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not router.slots[0].waking.done()  # still in flight: the autoscaler keeps the replica
        engine_up.set()
        assert (await router.slots[0].waking).ready
        await router._refresh(router.slots[0])
        return await router.generate(REQUEST)

    assert run(scenario()).backend == "vllm"


def test_a_generators_wait_ready_returns_once_its_engine_is_up_or_has_failed():
    """What the wake call waits on in the replica: the engine thread's start, success or failure."""

    class Loading(GeneratorBase):
        backend = "vllm"

    async def scenario():
        loading = Loading("m", 2048)
        waiting = asyncio.ensure_future(loading.wait_ready(600))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        loading.ready = True
        loading.started.set()  # as the engine thread does when it is up (or has failed)
        up = await waiting
        failed = Loading("m", 2048)
        failed.error = "RuntimeError: no memory"
        failed.started.set()
        return up, await failed.wait_ready(600), await Loading("m", 2048).wait_ready(0.01)

    up, failed, late = run(scenario())
    assert up.ready and not failed.ready and failed.error == "RuntimeError: no memory" and not late.ready


def test_a_generator_late_to_answer_its_status_poll_stays_ready_until_it_misses_several():
    """A generator busy on every core answers its status late: one late poll must not send the next
    question down the chain. `status_misses` late polls in a row, or one error reply, do."""
    primary, fallback = FakeGenerator("vllm"), FakeGenerator("llama_cpp")
    hang, broken = asyncio.Event(), False

    async def status():
        if broken:
            raise RuntimeError("replica died")
        if not hang.is_set():
            return await FakeGenerator.status(primary)
        await asyncio.sleep(3600)

    primary.status = status
    router = Router(RouterConfig(status_interval_s=0.01, status_misses=3), primary, fallback)

    async def scenario():
        nonlocal broken
        await router.models()
        router._poller.cancel()  # the polls below are the test's own, counted one by one
        hang.set()
        seen = []
        for _ in range(3):
            await router._refresh(router.slots[0])
            seen.append((await router.generate(REQUEST)).steps)
        hang.clear()
        await router._refresh(router.slots[0])
        back = (await router.generate(REQUEST)).steps
        broken = True
        await router._refresh(router.slots[0])
        return seen, back, (await router.generate(REQUEST)).steps

    seen, back, broken_steps = run(scenario())
    assert seen[:2] == [["primary: answered"]] * 2
    assert seen[2] == ["primary: skipped (not ready: failed)", "fallback: answered"]
    assert back == ["primary: answered"]
    assert broken_steps == ["primary: skipped (not ready: failed)", "fallback: answered"]


@pytest.mark.timeout(60)  # an engine thread that never ends the wait hangs it for the full 600 s
@pytest.mark.parametrize("outcome", ["up", "failed"])
def test_the_vllm_engine_thread_ends_the_wait_whether_it_started_or_failed(monkeypatch, outcome):
    """A wake call must not hang on an engine that failed to start: its error is the answer."""
    from serving.config import VllmConfig
    from serving.generator import vllm_engine

    def start_engine(config):
        if outcome == "failed":
            raise RuntimeError("no memory")
        return object(), object()

    monkeypatch.setattr(vllm_engine, "_start_engine", start_engine)
    generator = vllm_engine.VllmGenerator(VllmConfig())
    status = run(generator.wait_ready(600))
    generator.engine = None  # nothing to shut down
    assert (status.ready, status.error) == ((True, None) if outcome == "up" else (False, "RuntimeError: no memory"))
