"""Answer questions the way a configuration's serving app would, in-process, for evaluation.

The evaluation job is one more door of the serving app's answer flow (serving/flow.py): the
same stages (input screen, route, ground, generate, output screen, account) over the app's own
`Retriever` and the first generator of the config's chain, built locally. What an evaluation
must not share with users is turned off by construction, and said here: no key or quota (nobody
is charged), no semantic cache (every answer is fresh: a cached one would score the past), no
records and no history (evaluation rows are its records). The chain's failover is not part of
what is scored: the generator that answers while the chain is healthy is.
"""

from __future__ import annotations

from serving.answers import Turn
from serving.checks.auth import ANONYMOUS
from serving.config import GatewayConfig, ServeConfig, ServingSettings
from serving.flow import AnswerFlow
from serving.flow_support import LocalRouter
from serving.generator.extractive import ExtractiveGenerator
from serving.generator.protocol import GenerationRequest, Message
from serving.protocol import SearchRequest
from serving.retriever import Retriever


def first_generator(serve: ServeConfig):
    """The generator the config's chain tries first, built locally: its first step that is
    configured (the router drops a step whose backend is null, e.g. `primary: null`)."""
    for step in serve.router.steps():
        if step.backend == "primary" and serve.primary is not None:
            from serving.generator.vllm_engine import VllmGenerator

            return VllmGenerator(serve.primary)
        if step.backend == "fallback" and serve.fallback is not None:
            from serving.generator.llama_cpp_engine import LlamaCppGenerator

            return LlamaCppGenerator(serve.fallback)
        if step.backend == "extractive":
            break
    return ExtractiveGenerator()


class OneGenerator:
    """A generator as the flow's router: what it answers is what is scored, no failover."""

    def __init__(self, generator) -> None:
        self.generator = generator

    async def generate(self, request: GenerationRequest, model: str | None):
        return await self.generator.generate(request)

    def stream(self, request: GenerationRequest, model: str | None):
        return self.generator.stream(request)

    async def models(self):
        return [await self.generator.status()]


def evaluation_gateway(gateway: GatewayConfig) -> GatewayConfig:
    """The config's gateway section with what evaluation must not share with users turned off."""
    off = {"enabled": False}
    return gateway.model_copy(update={
        "auth": gateway.auth.model_copy(update=off), "quotas": gateway.quotas.model_copy(update=off),
        "cache": gateway.cache.model_copy(update=off), "records": gateway.records.model_copy(update=off),
        "history": gateway.history.model_copy(update=off), "graders": gateway.graders.model_copy(update=off),
    })  # fmt: skip


class RagAnswerer:
    """`/v1/query`'s flow for one index of the config, in-process."""

    def __init__(self, settings: ServingSettings, retriever: Retriever | None = None, generator=None) -> None:
        self.serve = serve = settings.serve
        self.retriever = retriever or Retriever(serve.retriever, settings.indexes)
        router = LocalRouter(OneGenerator(generator or first_generator(serve)))
        self.flow = AnswerFlow(
            evaluation_gateway(serve.gateway), self.retriever, router,
            indexes=serve.retriever.indexes, max_top_k=serve.retriever.max_top_k,
        )  # fmt: skip

    async def answer(self, question: str) -> dict:
        index = self.serve.retriever.indexes[0]
        turn = Turn(
            "query", ANONYMOUS, "eval", None, messages=[Message(role="user", content=question)],
            search=SearchRequest(query=question, index=index), temperature=0.0,
        )  # fmt: skip
        outcome = await self.flow.answer(turn)
        return {
            "answer": outcome.text.strip(),
            "finish_reason": outcome.result.choices[0].finish_reason if outcome.result.choices else None,
            "passages": outcome.context,
            "model": f"{outcome.result.backend}:{outcome.result.model}",
            "prompt": outcome.extra["prompt"],
            "index_version": outcome.extra["index_version"],
        }

    def close(self) -> None:
        self.retriever.close()
