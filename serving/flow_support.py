"""The answer flow's collaborators and the small stages it shares between whole and streamed answers.

The flow talks to the retriever and the router through two narrow ports, so the same flow runs
behind Ray Serve deployment handles (the gateway), over in-process objects (the evaluation job),
and over deterministic fakes (the unit tier):

- retriever: `search(request, vector)`, `embed(texts)`, `describe()`
- router: `generate(request, model)`, `stream(request, model)`, `close(stream)`, `models()`

`HandleRetriever` / `HandleRouter` adapt Serve handles to them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from indexes.embedder import Embedder, EmbedderConfig, load_embedder
from serving.answers import Grounding, Outcome, Plan, Route, Turn, context_tokens, observe_generation
from serving.checks.guard import Guard
from serving.checks.json_mode import generate_json
from serving.config import GatewayConfig, SearchCoalescing
from serving.errors import ModelNotFound, NotFound
from serving.followups import FollowupQueries
from serving.generator.protocol import Delta, GenerationRequest, GenerationResult, GeneratorStatus, Message, Usage
from serving.graders import Graders, Verdict
from serving.openai_protocol import RAG_PREFIX, usage_dict
from serving.prompts import PromptRegistry
from serving.protocol import DocumentResult, PassageResult, SearchRequest, SearchResult
from serving.rag import fit_context, grounded_messages
from serving.retriever import in_replica
from serving.stores.cache import SemanticCache, partition_key
from serving.stores.history import Conversations
from serving.stores.keys import Principal
from serving.stores.records import AnswerRecord, RecordStore
from serving.telemetry import metrics
from serving.telemetry.tracing import annotate, cost, stage

log = logging.getLogger(__name__)
SERVED_TTL_S = 1.0  # how long the flow reuses the retriever's list of served index versions
# the models the current request's key may use, for generations the flow makes on its behalf (the
# LLM judge of the graders): set where the request is known, read where the judge's request is made
ALLOWED_MODELS: ContextVar[list[str] | None] = ContextVar("allowed_models", default=None)


class HandleRetriever:
    """The retriever deployment's handle as the flow's retriever port.

    A call whose replica dies under it (its node lost, its process killed) is sent once more: Serve
    routes the second try to a live replica, and retrieval reads only, so repeating it is safe. Only
    the loss of the replica is retried, never an error the retriever answered (a client's 4xx).

    With `coalesce` (in a replica), concurrent searches share handle calls (`search_many`): on few
    cores the hop between actors costs more than a batched encode, so N searches that wait for a
    free call slot cost one hop, and each search's own error is raised to its caller alone."""

    def __init__(self, handle: Any, coalesce: SearchCoalescing | None = None) -> None:
        self.handle = handle
        self._searches = None
        if coalesce is not None and in_replica():  # serve.batch needs a replica's event loop and context
            batched = serve.batch(max_batch_size=coalesce.max_size, batch_wait_timeout_s=coalesce.wait_s,
                                  max_concurrent_batches=coalesce.in_flight)  # fmt: skip
            self._searches = batched(self._search_many)

    async def _search_many(self, items: list[tuple[SearchRequest, list[float] | None]]) -> list[Any]:
        return await self._call("search_many", [r for r, _ in items], [v for _, v in items])

    async def _call(self, method: str, *args: Any) -> Any:
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(RayActorError), stop=stop_after_attempt(2),
                                           before_sleep=_log_replica_lost, reraise=True):  # fmt: skip
            with attempt:
                return await getattr(self.handle, method).remote(*args)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def search(self, request: SearchRequest, vector: list[float] | None = None) -> SearchResult:
        if self._searches is None:
            return await self._call("search", request, vector)
        found = await self._searches((request, vector))
        if isinstance(found, Exception):
            raise found
        return found

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return await self._call("embed", texts)

    async def describe(self) -> dict[str, dict]:
        return await self._call("describe")

    async def passage(self, index: str, chunk_id: str) -> PassageResult:
        return await self._call("passage", index, chunk_id)

    async def document(self, index: str, source: str) -> DocumentResult:
        return await self._call("document", index, source)


def _log_replica_lost(state: RetryCallState) -> None:
    log.warning("a retriever replica was lost mid-request (%s); sending it to another", state.outcome.exception())


class HandleRouter:
    """The router deployment's handle as the flow's router port."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def generate(self, request: GenerationRequest, model: str | None) -> GenerationResult:
        return await self.handle.generate.remote(request, model)

    def stream(self, request: GenerationRequest, model: str | None) -> AsyncIterator[Delta]:
        return self.handle.options(stream=True).stream.remote(request, model)

    async def close(self, stream: Any) -> None:
        """Cancel a stream the flow stopped reading: Serve cancels the router's request, and with it
        the engine's (vLLM aborts it, llama.cpp stops sampling)."""
        stream.cancel()

    async def models(self) -> list[GeneratorStatus]:
        return await self.handle.models.remote()


class LocalRouter:
    """An in-process `Router` (or anything with its `generate`/`stream`/`models`) as the router port."""

    def __init__(self, router: Any) -> None:
        self.router = router

    async def generate(self, request: GenerationRequest, model: str | None) -> GenerationResult:
        return await self.router.generate(request, model)

    def stream(self, request: GenerationRequest, model: str | None) -> AsyncIterator[Delta]:
        return self.router.stream(request, model)

    async def close(self, stream: Any) -> None:
        await stream.aclose()

    async def models(self) -> list[GeneratorStatus]:
        return await self.router.models()


class FlowSupport:
    """Collaborators (injected) and the stages the whole and the streamed answer share."""

    def __init__(
        self, config: GatewayConfig, retriever: Any, router: Any, *, indexes: list[str], max_top_k: int,
        guard: Guard | None = None, embedder: EmbedderConfig | None = None, loaded_embedder: Embedder | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.retriever, self.router = retriever, router
        self.indexes, self.max_top_k = list(indexes), max_top_k  # from the retriever's own config
        self.prompts = PromptRegistry.load(config.prompts_dir, config.default_prompt)
        # the leak check compares answers with the instructions only (quoting passages is the point)
        self.guard = guard or Guard(config, system_prompt=self.prompts.default.render([]))
        self.records = (
            RecordStore(config.records.path, config.records.retention_days) if config.records.enabled else None
        )
        self.cache = SemanticCache(config.cache) if config.cache.enabled else None
        self.conversations = Conversations(config.history)
        self.followups = FollowupQueries(config.followups, lambda request: self.router.generate(request, None))
        self.graders = Graders(config.graders, self._embed, self._generate) if config.graders.enabled else None
        # `loaded_embedder`: one this process already holds (a colocated retriever's), never loaded twice
        self.embedder_config, self._embedder = embedder, loaded_embedder
        self._served_at, self._served = -math.inf, {}

    # -- collaborators, with what the flow keeps of them ----------------------------------------

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors from the index's embedder. With `embedder` given it runs here (loaded on
        first use, off the event loop), so a semantic-cache lookup costs no call to the retriever."""
        if self.embedder_config is None and self._embedder is None:
            vectors, _ = await self.retriever.embed(texts)
            return np.asarray(vectors, dtype=np.float32)
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(load_embedder, self.embedder_config)
        return await asyncio.to_thread(self._embedder.encode, texts)

    async def _served_indexes(self, fresh: bool = False) -> dict[str, Any]:
        """The retriever's served indexes and versions, reused for `SERVED_TTL_S` (a reload takes longer)."""
        if fresh or time.monotonic() - self._served_at > SERVED_TTL_S:
            self._served = await self.retriever.describe()
            self._served_at = time.monotonic()
        return self._served

    async def _generate(self, generation: GenerationRequest, generator: str | None = None) -> GenerationResult:
        """The router's answer, held to JSON mode when asked (validated, regenerated a bounded number of times)."""
        if generation.allowed_models is None and ALLOWED_MODELS.get() is not None:
            generation = generation.model_copy(update={"allowed_models": ALLOWED_MODELS.get()})
        with stage("generate") as span:
            started = time.perf_counter()
            result = await generate_json(
                lambda r: self.router.generate(r, generator), generation, self.config.json_retries
            )
            observe_generation(span, result, time.perf_counter() - started)
        return result

    async def ground(
        self, messages: list[Message], search: SearchRequest, prompt: str | None, *,
        max_chars: int | None = None, vector: list[float] | None = None,
    ) -> Grounding:  # fmt: skip
        template = self.prompts.get(prompt)
        with stage("retrieve", **{"rayrag.index": search.index}) as span:
            result = await self.retriever.search(search, vector)
            span.set_attributes({"rayrag.index_version": result.version, "rayrag.hits": len(result.chunks)})
        chunks = fit_context(result.chunks, max_chars or self.config.max_context_chars)
        return Grounding(grounded_messages(template.render(chunks), messages), result, chunks, template.ref)

    async def check_embedding_model(self, model: str, who: Principal) -> None:
        """`model` of /v1/embeddings: `rag:<index>` (the key may use it) or the served embedder's name."""
        if model.startswith(RAG_PREFIX):
            self.guard.check_index(who, model[len(RAG_PREFIX) :])
        indexes = {n: i for n, i in (await self._served_indexes()).items() if who.may_use_index(n)}
        allowed = {f"{RAG_PREFIX}{name}" for name in indexes} | {info.get("embedder") for info in indexes.values()}
        if model not in allowed:
            raise ModelNotFound(
                f"model {model!r} is not an embedding model here; use one of {sorted(a for a in allowed if a)}",
                param="model",
            )

    async def _grade(self, plan: Plan, result: GenerationResult, grounded: Grounding) -> dict[str, Verdict]:
        """Both verdicts on `result`; what an llm judge spent on them is kept on `plan` for accounting."""
        passages = [c.text for c in grounded.chunks]
        with stage("grade") as span:
            verdicts = await self.graders.grade(plan.search.query, result.choices[0].text, passages)
            plan.judged += [(v.usage, v.model or "unknown") for v in verdicts.values() if v.usage is not None]
            span.set_attributes({f"rayrag.{name}": v.verdict for name, v in verdicts.items()})
        for name, verdict in verdicts.items():
            metrics.verdicts().inc(1, {"grader": name, "verdict": verdict.verdict})
        return verdicts

    # -- the semantic cache ----------------------------------------------------------------------

    def _partition(self, turn: Turn, route: Route, search: SearchRequest) -> str:
        """Everything that changes an answer besides the question's wording."""
        sampling = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in turn.sampling.items()}
        return partition_key(
            tenant=turn.who.tenant, index=route.index, version=route.version, model=turn.model,
            prompt=self.prompts.get(turn.prompt_template).ref, max_tokens=turn.max_tokens,
            temperature=turn.temperature, search=search.model_dump(exclude={"query"}), **sampling,
        )  # fmt: skip

    @staticmethod
    def _count_lookup(hit: bool) -> None:
        metrics.cache_lookups().inc(1, {"result": "hit" if hit else "miss"})

    # -- after the answer ------------------------------------------------------------------------

    def _account(self, who: Principal, usage: Usage, model: str, generation: GenerationRequest | None) -> None:
        """Charge the key, count its tokens by kind, and put tokens and cost on the request's trace."""
        self.guard.charge(who, usage.total_tokens)
        context = context_tokens(usage, generation)
        for kind, count in (("prompt", usage.prompt_tokens), ("context", context),
                            ("completion", usage.completion_tokens)):  # fmt: skip
            metrics.add(metrics.tokens(), count, {"kind": kind, "key_id": who.key_id, "model": model})
        spent = cost(usage, model, self.config.telemetry)
        metrics.add(metrics.spend(), spent, {"key_id": who.key_id, "model": model})
        annotate(**{
            "rayrag.key_id": who.key_id, "rayrag.model": model, "rayrag.prompt_tokens": usage.prompt_tokens,
            "rayrag.context_tokens": context, "rayrag.completion_tokens": usage.completion_tokens,
            "rayrag.cost": spent,
        })  # fmt: skip

    def _record(self, turn: Turn, outcome: Outcome, generation: GenerationRequest | None) -> None:
        """The answer's explanation record (and its trace attributes), under the id the flow was given."""
        extra, result = outcome.extra, outcome.result
        chunks = [{k: c[k] for k in ("chunk_id", "source", "score")} for c in extra.get("citations", [])]
        annotate(**{
            "rayrag.endpoint": turn.endpoint, "rayrag.backend": result.backend, "rayrag.prompt": extra.get("prompt"),
            "rayrag.index": extra.get("index"), "rayrag.index_version": extra.get("index_version"),
            "rayrag.chunk_ids": [c["chunk_id"] for c in chunks], "rayrag.steps": result.steps,
        })  # fmt: skip
        if self.records is None:
            return
        self.records.save(AnswerRecord(
            request_id=turn.rid, client_request_id=turn.client_rid, tenant=turn.who.tenant, key_id=turn.who.key_id, endpoint=turn.endpoint,
            model=result.model, backend=result.backend, prompt=extra.get("prompt"), index=extra.get("index"),
            index_version=extra.get("index_version"), chunks=chunks, usage=usage_dict(result.usage),
            finish_reasons=[c.finish_reason for c in result.choices], steps=result.steps,
            grades=extra.get("grades"), session_id=turn.session_id, cache=extra.get("cache"),
            messages=[{"role": m.role, "chars": len(m.content)} for m in (generation.messages or [])] if generation else [],
        ))  # fmt: skip

    def records_or_404(self) -> RecordStore:
        if self.records is None:
            raise NotFound("answer records are turned off (serve.gateway.records.enabled)", code="records_disabled")
        return self.records

    def graders_or_404(self) -> Graders:
        if self.graders is None:
            raise NotFound("graders are turned off (serve.gateway.graders.enabled)", code="graders_disabled")
        return self.graders

    # -- readiness -------------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every configured index is loaded and the chain's first model generator (of those
        not scaled to zero) is ready;
        a chain that is extractive by configuration is ready with its indexes. The body says what is missing."""
        missing: list[str] = []
        try:
            indexes = await self._served_indexes(fresh=True)
        except Exception as exc:  # noqa: BLE001 - an unreachable retriever is a reason, not a crash
            log.warning("readiness: the retriever did not answer: %r", exc)
            indexes, missing = {}, ["retriever is not reachable"]
        missing += [f"index {name!r} is not loaded" for name in self.indexes if name not in indexes]
        indexes = {
            name: info | {"error": "unavailable" if info.get("error") else None} for name, info in indexes.items()
        }
        # what a generator's error says stays in the logs: the body carries that there is one
        generators = [
            s.model_dump() | {"error": "unavailable" if s.error else None} for s in await self.router.models()
        ]
        # a generator scaled to zero by configuration is not waited for: a later step answers meanwhile
        models = [g for g in generators if g["backend"] != "extractive" and not g["scaled_to_zero"]]
        if models and not models[0]["ready"]:
            missing.append(f"generator {models[0]['backend']} ({models[0]['model']}) is not ready")
        body = {"ready": not missing, "missing": missing, "indexes": indexes, "generators": generators,
                "extractive_only": not models}  # fmt: skip
        return not missing, body
