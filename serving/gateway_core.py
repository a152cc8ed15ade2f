"""The gateway's work behind its routes (the routes are in serving/gateway.py).

Resolving `model` (`rag:<index>` or a generator), conversation history, grounding a question in
retrieved passages with a versioned prompt, JSON mode, the graders' self-check, streaming as SSE or
websocket events with output guardrails, the semantic cache and the answer records. Collaborators
(retriever and router handles, the guard) are injected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, NamedTuple

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from indexes.embedder import EmbedderConfig, load_embedder
from serving import edge
from serving.answers import (
    Answer,
    CacheProbe,
    Grounding,
    backend_header,
    context_tokens,
    grades_summary,
    observe_generation,
)
from serving.config import GatewayConfig
from serving.errors import InvalidRequest, LimitExceeded, ModelNotFound, NotFound
from serving.gateway_streams import GatewayStreams
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, Usage
from serving.graders import Graders, Verdict
from serving.middleware.cache import SemanticCache, partition_key
from serving.middleware.guard import Guard
from serving.middleware.history import Conversations
from serving.middleware.json_mode import generate_json
from serving.middleware.keys import Principal
from serving.middleware.records import AnswerRecord, RecordStore
from serving.openai_protocol import (
    RAG_PREFIX,
    ChatCompletionRequest,
    SamplingFields,
    usage_dict,
)
from serving.prompts import PromptRegistry
from serving.protocol import SearchRequest
from serving.rag import fit_context, grounded_messages, question_of
from serving.telemetry import metrics
from serving.telemetry.tracing import annotate, cost, setup_tracing, stage

log = logging.getLogger(__name__)
SERVED_TTL_S = 1.0  # how long the gateway reuses the retriever's list of served index versions
# generation parameters that change an answer, so part of the semantic cache's partition key
CACHE_KEYED_PARAMS = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed"} | {
    "response_format"
}


class Route(NamedTuple):
    """Where a `model` name leads: an index (with its served version) or a generator."""

    index: str | None
    generator: str | None
    version: str | None = None


class GatewayCore(GatewayStreams):
    """The work behind the routes: routing models, grounding, streaming, caching, records."""

    def __init__(
        self,
        config: GatewayConfig,
        retriever: Any,
        router: Any,
        guard: Guard | None = None,
        embedder: EmbedderConfig | None = None,
    ) -> None:
        self.config = config
        self.retriever = retriever
        self.router = router
        self.prompts = PromptRegistry.load(config.prompts_dir, config.default_prompt)
        # the leak check compares answers with the instructions only (quoting passages is the point)
        self.guard = guard or Guard(config, system_prompt=self.prompts.default.render([]))
        self.records = RecordStore(config.records.path) if config.records.enabled else None
        self.cache = SemanticCache(config.cache) if config.cache.enabled else None
        self.conversations = Conversations(config.history)
        setup_tracing(config.telemetry, "rayrag-gateway")
        self.graders = Graders(config.graders, self._embed, self._generate) if config.graders.enabled else None
        self.embedder_config, self._embedder = embedder, None
        self._served_at, self._served = -math.inf, {}

    # -- collaborators, with what this replica keeps of them --------------------------------------

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors from the index's embedder. With `embedder` given it runs in this replica (loaded
        on first use), so a semantic-cache hit or a grade costs no call to the retriever."""
        if self.embedder_config is None:
            vectors, _ = await self.retriever.embed.remote(texts)
            return np.asarray(vectors, dtype=np.float32)
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(load_embedder, self.embedder_config)
        if len(texts) == 1:
            return self._embedder.encode(texts)  # a few milliseconds: not worth a thread hop
        return await asyncio.to_thread(self._embedder.encode, texts)

    async def _served_indexes(self, fresh: bool = False) -> dict[str, Any]:
        """The retriever's served indexes and versions, reused for `SERVED_TTL_S` (a reload takes longer)."""
        if fresh or time.monotonic() - self._served_at > SERVED_TTL_S:
            self._served = await self.retriever.describe.remote()
            self._served_at = time.monotonic()
        return self._served

    async def _generate(self, generation: GenerationRequest, generator: str | None = None) -> GenerationResult:
        """The router's answer, held to JSON mode when asked (validated, regenerated a bounded number of times)."""
        with stage("generate") as span:
            started = time.perf_counter()
            result = await generate_json(
                lambda r: self.router.generate.remote(r, generator), generation, self.config.json_retries
            )
            observe_generation(span, result, time.perf_counter() - started)
        return result

    def _account(self, who: Principal, usage: Usage, model: str, generation: GenerationRequest | None) -> None:
        """Charge the key, count its tokens by kind, and put tokens and cost on the request's trace."""
        self.guard.charge(who, usage.total_tokens)
        context = context_tokens(usage, generation)
        for kind, count in (
            ("prompt", usage.prompt_tokens),
            ("context", context),
            ("completion", usage.completion_tokens),
        ):
            metrics.add(metrics.tokens(), count, {"kind": kind, "key_id": who.key_id, "model": model})
        spent = cost(usage, model, self.config.telemetry)
        metrics.add(metrics.spend(), spent, {"key_id": who.key_id, "model": model})
        annotate(**{
            "rayrag.key_id": who.key_id, "rayrag.model": model, "rayrag.prompt_tokens": usage.prompt_tokens,
            "rayrag.context_tokens": context, "rayrag.completion_tokens": usage.completion_tokens,
            "rayrag.cost": spent,
        })  # fmt: skip

    # -- grounded answers and their self-check ---------------------------------------------------

    async def _grade(self, question: str, result: GenerationResult, grounded: Grounding) -> dict[str, Verdict]:
        passages = [c.text for c in grounded.chunks]
        with stage("grade") as span:
            verdicts = await self.graders.grade(question, result.choices[0].text, passages)
            span.set_attributes({f"rayrag.{name}": v.verdict for name, v in verdicts.items()})
        for name, verdict in verdicts.items():
            metrics.verdicts().inc(1, {"grader": name, "verdict": verdict.verdict})
        return verdicts

    async def _answer(
        self, grounded: Grounding, generation: GenerationRequest, generator: str | None, search: SearchRequest
    ) -> Answer:
        """Generate; with graders on, grade, and when the answer is not grounded regenerate once with
        the strict prompt and more context, and keep the verdicts of both tries."""
        result = await self._generate(generation, generator)
        if self.graders is None or generation.response_format is not None:
            return Answer(result, grounded)
        first = await self._grade(search.query, result, grounded)
        settings = self.config.graders
        if first["groundedness"].passed or not settings.regenerate:
            return Answer(result, grounded, grades_summary(first, None))
        wider = search.model_copy(update={"top_k": math.ceil(len(grounded.result.chunks) * settings.context_factor)})
        chars = int(self.config.max_context_chars * settings.context_factor)
        conversation = [m for m in generation.messages if m.role != "system"]
        retry = await self._ground(conversation, wider, settings.strict_prompt, chars)
        try:
            second = await self._generate(self._regrounded(generation, retry), generator)
        except InvalidRequest:  # the wider context does not fit this model: keep the first answer, marked
            return Answer(result, grounded, grades_summary(first, None))
        second = second.model_copy(update={"usage": result.usage + second.usage})
        return Answer(second, retry, grades_summary(first, await self._grade(search.query, second, retry)))

    @staticmethod
    def _regrounded(generation: GenerationRequest, grounded: Grounding) -> GenerationRequest:
        context = [c.text for c in grounded.chunks]
        return generation.model_copy(update={"messages": grounded.messages, "context": context})

    async def _cache_probe(self, who: Principal, route: Route, messages: list[Message], body: ChatCompletionRequest):
        """Look the question up in the semantic cache; None when the cache does not apply (off,
        streaming, or a multi-turn conversation, whose answer depends on more than the question).
        A repeat of a cached question is found by its text, without embedding it."""
        if self.cache is None or body.stream or sum(m.role != "system" for m in messages) != 1:
            return None
        question = question_of(messages)
        self.cache.observe_version(route.index, route.version)
        params = body.model_dump(include=CACHE_KEYED_PARAMS)
        partition = partition_key(
            tenant=who.tenant, index=route.index, version=route.version, model=body.model,
            prompt=self.prompts.get(body.prompt_template).ref, **params,
        )  # fmt: skip
        if (same := self.cache.lookup_exact(partition, question)) is not None:
            metrics.cache_lookups().inc(1, {"result": "hit"})
            return CacheProbe(partition, route.version, question, [], (same, 1.0))
        with stage("embed_query"):
            vector = (await self._embed([question]))[0]
        hit = self.cache.lookup(partition, vector)
        metrics.cache_lookups().inc(1, {"result": "miss" if hit is None else "hit"})
        return CacheProbe(partition, route.version, question, vector.tolist(), hit)

    def _cached_reply(self, rid: str, probe: CacheProbe, started: float) -> JSONResponse:
        """The cached answer under this request's id; `server-timing` says how long the gateway took
        (the rest of what a client measures is the HTTP proxy's hop)."""
        cached, similarity = probe.hit
        reply = cached | {"id": rid, "created": int(time.time())}
        reply["rayrag"] = cached["rayrag"] | {"cache": {"hit": True, "similarity": round(similarity, 4)}}
        spent_ms = (time.perf_counter() - started) * 1000
        headers = {"x-rayrag-cache": "hit", "x-rayrag-cache-similarity": f"{similarity:.4f}",
                   "server-timing": f"gateway;dur={spent_ms:.2f}"}  # fmt: skip
        return JSONResponse(reply, headers=headers | backend_header(cached["rayrag"]["backend"]))

    def _graders(self) -> Graders:
        if self.graders is None:
            raise NotFound("graders are turned off (serve.gateway.graders.enabled)", code="graders_disabled")
        return self.graders

    def _records(self) -> RecordStore:
        if self.records is None:
            raise NotFound("answer records are turned off (serve.gateway.records.enabled)", code="records_disabled")
        return self.records

    def _remember(
        self, rid: str, who: Principal, endpoint: str, result: GenerationResult, extra: dict, session: str | None = None
    ) -> None:
        chunks = [{k: c[k] for k in ("chunk_id", "source", "score")} for c in extra.get("citations", [])]
        annotate(**{
            "rayrag.endpoint": endpoint, "rayrag.backend": result.backend, "rayrag.prompt": extra.get("prompt"),
            "rayrag.index": extra.get("index"), "rayrag.index_version": extra.get("index_version"),
            "rayrag.chunk_ids": [c["chunk_id"] for c in chunks], "rayrag.steps": result.steps,
        })  # fmt: skip
        if self.records is None:
            return
        self.records.save(AnswerRecord(
            request_id=rid, tenant=who.tenant, key_id=who.key_id, endpoint=endpoint, model=result.model,
            backend=result.backend, prompt=extra.get("prompt"), index=extra.get("index"),
            index_version=extra.get("index_version"), chunks=chunks, usage=usage_dict(result.usage),
            finish_reasons=[c.finish_reason for c in result.choices], steps=result.steps,
            grades=extra.get("grades"), session_id=session,
        ))  # fmt: skip

    async def _route(self, model: str, who: Principal) -> Route:
        """An index for `rag:<index>`, else a generator; unknown names are 404.
        Permission is checked first, so a refused name gets 403 whether it exists or not."""
        if not model.startswith(RAG_PREFIX):
            self.guard.check_model(who, model)
            return Route(None, model)
        index = model[len(RAG_PREFIX) :]
        self.guard.check_index(who, index)
        served = await self._served_indexes()
        if index not in served:
            raise ModelNotFound(f"model {model!r} does not exist: no index {index!r} is served", param="model")
        return Route(index, None, served[index]["version"])

    async def _embedding_model(self, model: str, who: Principal) -> None:
        if model.startswith(RAG_PREFIX):
            self.guard.check_index(who, model[len(RAG_PREFIX) :])
        indexes = {n: i for n, i in (await self._served_indexes()).items() if who.may_use_index(n)}
        allowed = {f"{RAG_PREFIX}{name}" for name in indexes} | {info.get("embedder") for info in indexes.values()}
        if model not in allowed:
            raise ModelNotFound(
                f"model {model!r} is not an embedding model here; use one of {sorted(a for a in allowed if a)}",
                param="model",
            )

    async def _ground(
        self, messages: list[Message], search: SearchRequest, prompt: str | None, max_chars: int | None = None
    ) -> Grounding:
        template = self.prompts.get(prompt)
        with stage("retrieve", **{"rayrag.index": search.index}) as span:
            result = await self.retriever.search.remote(search)
            span.set_attributes({"rayrag.index_version": result.version, "rayrag.hits": len(result.chunks)})
        chunks = fit_context(result.chunks, max_chars or self.config.max_context_chars)
        return Grounding(grounded_messages(template.render(chunks), messages), result, chunks, template.ref)

    def _generation(
        self,
        messages,
        body: SamplingFields | None,
        max_tokens: int | None,
        temperature: float,
        request: Request | None,
        rid: str | None = None,
        grounded: Grounding | None = None,
        prompt: str | None = None,
    ) -> GenerationRequest:
        limit = max_tokens or self.config.default_max_tokens
        if limit > self.config.max_tokens_cap:
            raise LimitExceeded(
                f"max_tokens {limit} is over the limit of {self.config.max_tokens_cap}", param="max_tokens"
            )
        sampling = {"n": body.n, "top_p": body.top_p, "stop": body.stop_list, "seed": body.seed} if body else {}
        if body is not None and body.response_format is not None:
            sampling["response_format"] = body.response_format.for_generation()
        if self.config.telemetry.log_prompts:  # debug only: prompts may hold personal data
            log.info("prompt of %s: %s", rid or edge.request_id(request), messages or prompt)
        return GenerationRequest(
            messages=messages,
            prompt=prompt,
            max_tokens=limit,
            temperature=temperature,
            request_id=rid or edge.request_id(request),
            context=[c.text for c in grounded.chunks] if grounded else [],
            **sampling,
        )
