"""The gateway's work behind its routes (the routes are in serving/gateway.py).

Resolving `model` (`rag:<index>` or a generator), grounding a question in retrieved passages with a
versioned prompt, streaming as SSE or websocket events with output guardrails, the semantic cache and
the answer records. Collaborators (retriever and router handles, the guard) are injected.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from serving import edge
from serving.config import GatewayConfig
from serving.errors import LimitExceeded, ModelNotFound, NotFound, ServingError, unwrap
from serving.generator.protocol import GenerationRequest, GenerationResult, Message
from serving.middleware.cache import SemanticCache, partition_key
from serving.middleware.guard import Guard
from serving.middleware.keys import Principal
from serving.middleware.records import AnswerRecord, RecordStore
from serving.openai_protocol import (
    RAG_PREFIX,
    ChatCompletionRequest,
    SamplingFields,
    chat_chunk,
    completion_chunk,
    usage_dict,
)
from serving.prompts import PromptRegistry
from serving.protocol import ScoredChunk, SearchRequest, SearchResult
from serving.rag import citations, fit_context, grounded_messages, question_of


def backend_header(backend: str) -> dict[str, str]:
    return {"x-rayrag-backend": backend}


@dataclass(frozen=True)
class CacheProbe:
    """A RAG question looked up in the semantic cache: where it belongs and what was found."""

    partition: str
    version: str
    question: str
    vector: list[float]
    hit: tuple[dict, float] | None


@dataclass(frozen=True)
class Grounding:
    """A RAG request after retrieval: the messages to generate from, what was found, the prompt used."""

    messages: list[Message]
    result: SearchResult
    chunks: list[ScoredChunk]  # the retrieved chunks that fit the context budget, as put in the prompt
    prompt: str


def rag_extra(grounded: Grounding, config: GatewayConfig) -> dict[str, Any]:
    return {
        "index": grounded.result.index,
        "prompt": grounded.prompt,
        "index_version": grounded.result.version,
        "citations": [c.model_dump() for c in citations(grounded.chunks, config.snippet_chars)],
    }


class Route(NamedTuple):
    """Where a `model` name leads: an index (with its served version) or a generator."""

    index: str | None
    generator: str | None
    version: str | None = None


class GatewayCore:
    """The work behind the routes: routing models, grounding, streaming, caching, records."""

    def __init__(self, config: GatewayConfig, retriever: Any, router: Any, guard: Guard | None = None) -> None:
        self.config = config
        self.retriever = retriever
        self.router = router
        self.prompts = PromptRegistry.load(config.prompts_dir, config.default_prompt)
        # the leak check compares answers with the instructions only (quoting passages is the point)
        self.guard = guard or Guard(config, system_prompt=self.prompts.default.render([]))
        self.records = RecordStore(config.records.path) if config.records.enabled else None
        self.cache = SemanticCache(config.cache) if config.cache.enabled else None

    # -- helpers ---------------------------------------------------------------------------------

    async def _socket_turn(self, websocket: WebSocket, raw: str) -> None:
        rid = edge.new_request_id()
        try:
            who = self.guard.admit(websocket.headers)
            body = ChatCompletionRequest.model_validate_json(raw)
            messages = self.guard.screen_messages(body.messages)
            index, generator, _ = await self._route(body.model, who)
            if index is not None:
                search = SearchRequest(query=question_of(messages), index=index)
                messages = (await self._ground(messages, search, body.prompt_template)).messages
            generation = self._generation(messages, body, body.token_limit, body.temperature, None, rid=rid)
            async for delta in self.router.options(stream=True).stream.remote(generation, generator):
                kind = "done" if delta.usage else "delta"
                if delta.usage:
                    self.guard.charge(who, delta.usage.total_tokens)
                await websocket.send_json({"type": kind, "request_id": rid, **delta.model_dump(exclude_none=True)})
        except ValidationError as exc:
            await websocket.send_json(
                {
                    "type": "error",
                    **edge.error_body(
                        str(exc.errors()[0]["msg"]), "invalid_request_error", "invalid_request", None, rid
                    ),
                }
            )
        except ServingError as exc:
            await websocket.send_json({"type": "error", **json.loads(edge.sse_error(exc, rid))})

    async def _cache_probe(self, who: Principal, route: Route, messages: list[Message], body: ChatCompletionRequest):
        """Look the question up in the semantic cache; None when the cache does not apply (off,
        streaming, or a multi-turn conversation, whose answer depends on more than the question)."""
        if self.cache is None or body.stream or sum(m.role != "system" for m in messages) != 1:
            return None
        question = question_of(messages)
        index, version = route.index, route.version
        self.cache.observe_version(index, version)
        vectors, _ = await self.retriever.embed.remote([question])
        params = body.model_dump(
            include={"max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed"}
        )
        prompt = self.prompts.get(body.prompt_template).ref
        partition = partition_key(
            tenant=who.tenant, index=index, version=version, prompt=prompt, model=body.model, **params
        )
        return CacheProbe(partition, version, question, vectors[0], self.cache.lookup(partition, vectors[0]))

    def _cached_reply(self, rid: str, who: Principal, probe: CacheProbe) -> JSONResponse:
        cached, similarity = probe.hit
        reply = cached | {"id": rid, "created": int(time.time())}
        reply["rayrag"] = cached["rayrag"] | {"cache": {"hit": True, "similarity": round(similarity, 4)}}
        headers = {"x-rayrag-cache": "hit", "x-rayrag-cache-similarity": f"{similarity:.4f}"}
        return JSONResponse(reply, headers=headers | backend_header(cached["rayrag"]["backend"]))

    def _records(self) -> RecordStore:
        if self.records is None:
            raise NotFound("answer records are turned off (serve.gateway.records.enabled)", code="records_disabled")
        return self.records

    def _remember(self, rid: str, who: Principal, endpoint: str, result: GenerationResult, extra: dict) -> None:
        if self.records is None:
            return
        chunks = [{k: c[k] for k in ("chunk_id", "source", "score")} for c in extra.get("citations", [])]
        self.records.save(AnswerRecord(
            request_id=rid, tenant=who.tenant, key_id=who.key_id, endpoint=endpoint, model=result.model,
            backend=result.backend, prompt=extra.get("prompt"), index=extra.get("index"),
            index_version=extra.get("index_version"), chunks=chunks, usage=usage_dict(result.usage),
            finish_reasons=[c.finish_reason for c in result.choices],
        ))  # fmt: skip

    async def _route(self, model: str, who: Principal) -> Route:
        """An index for `rag:<index>`, else a generator; unknown names are 404.
        Permission is checked first, so a refused name gets 403 whether it exists or not."""
        if not model.startswith(RAG_PREFIX):
            self.guard.check_model(who, model)
            return Route(None, model)
        index = model[len(RAG_PREFIX) :]
        self.guard.check_index(who, index)
        served = await self.retriever.describe.remote()
        if index not in served:
            raise ModelNotFound(f"model {model!r} does not exist: no index {index!r} is served", param="model")
        return Route(index, None, served[index]["version"])

    async def _embedding_model(self, model: str, who: Principal) -> None:
        if model.startswith(RAG_PREFIX):
            self.guard.check_index(who, model[len(RAG_PREFIX) :])
        indexes = {n: i for n, i in (await self.retriever.describe.remote()).items() if who.may_use_index(n)}
        allowed = {f"{RAG_PREFIX}{name}" for name in indexes} | {info.get("embedder") for info in indexes.values()}
        if model not in allowed:
            raise ModelNotFound(
                f"model {model!r} is not an embedding model here; use one of {sorted(a for a in allowed if a)}",
                param="model",
            )

    async def _ground(self, messages: list[Message], search: SearchRequest, prompt: str | None) -> Grounding:
        template = self.prompts.get(prompt)
        result = await self.retriever.search.remote(search)
        chunks = fit_context(result.chunks, self.config.max_context_chars)
        return Grounding(grounded_messages(template.render(chunks), messages), result, chunks, template.ref)

    def _generation(
        self,
        messages,
        body: SamplingFields | None,
        max_tokens: int | None,
        temperature: float,
        request: Request | None,
        prompt: str | None = None,
        rid: str | None = None,
    ) -> GenerationRequest:
        limit = max_tokens or self.config.default_max_tokens
        if limit > self.config.max_tokens_cap:
            raise LimitExceeded(
                f"max_tokens {limit} is over the limit of {self.config.max_tokens_cap}", param="max_tokens"
            )
        sampling = {"n": body.n, "top_p": body.top_p, "stop": body.stop_list, "seed": body.seed} if body else {}
        return GenerationRequest(
            messages=messages,
            prompt=prompt,
            max_tokens=limit,
            temperature=temperature,
            request_id=rid or edge.request_id(request),
            **sampling,
        )

    async def _chat_stream(
        self, rid: str, model: str, generation: GenerationRequest, generator: str | None, extra: dict, who: Principal
    ) -> AsyncIterator[dict]:
        try:
            started: set[int] = set()
            texts: dict[int, str] = {}
            async for delta in self.router.options(stream=True).stream.remote(generation, generator):
                if delta.usage is not None:
                    self.guard.charge(who, delta.usage.total_tokens)
                    streamed = GenerationResult(model=model, backend=delta.backend, choices=[], usage=delta.usage)
                    self._remember(rid, who, "chat", streamed, extra)
                    rayrag = {"backend": delta.backend, **extra}
                    yield {
                        "data": json.dumps(
                            chat_chunk(rid, model, 0, {}, None, usage=usage_dict(delta.usage), rayrag=rayrag)
                            | {"choices": []}
                        )
                    }
                    continue
                content = {"content": delta.text} | ({} if delta.index in started else {"role": "assistant"})
                started.add(delta.index)
                texts[delta.index] = texts.get(delta.index, "") + delta.text
                if self.guard.guardrails.screen_output(texts[delta.index]):  # stop before more of it is sent
                    yield {"data": json.dumps(chat_chunk(rid, model, delta.index, {}, "content_filter"))}
                    break
                yield {"data": json.dumps(chat_chunk(rid, model, delta.index, content, delta.finish_reason))}
        except Exception as exc:  # noqa: BLE001 - headers are sent; the error travels as an event
            yield {"data": edge.sse_error(unwrap(exc), rid)}
        yield {"data": "[DONE]"}

    async def _completion_stream(
        self, rid: str, model: str, generation: GenerationRequest, generator: str | None, who: Principal
    ) -> AsyncIterator[dict]:
        try:
            async for delta in self.router.options(stream=True).stream.remote(generation, generator):
                if delta.usage is not None:
                    self.guard.charge(who, delta.usage.total_tokens)
                else:
                    yield {
                        "data": json.dumps(completion_chunk(rid, model, delta.index, delta.text, delta.finish_reason))
                    }
        except Exception as exc:  # noqa: BLE001 - headers are sent; the error travels as an event
            yield {"data": edge.sse_error(unwrap(exc), rid)}
        yield {"data": "[DONE]"}
