"""The router's fallback rules, with generators that fail on cue."""

from __future__ import annotations

import asyncio

import pytest

from serving.config import RouterConfig
from serving.errors import EngineDead, InvalidRequest, ModelNotFound
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


def test_unknown_model_is_404_and_the_last_backend_is_tried_even_if_unready():
    router = Router(RouterConfig(), FakeGenerator("vllm", model="big"), FakeGenerator("llama_cpp", model="small"))
    with pytest.raises(ModelNotFound):
        answer(router, "nope")
    assert answer(router, "small").backend == "vllm"  # the chain is primary-first whatever the name
    lonely = Router(RouterConfig(), None, FakeGenerator("llama_cpp", ready=False))
    assert answer(lonely).backend == "llama_cpp"
