"""The gateway's work behind its routes (the routes are in serving/gateway.py).

Resolving `model` (`rag:<index>` or a generator), conversation history, grounding a question in
retrieved passages with a versioned prompt, JSON mode, the graders' self-check, streaming as SSE or
websocket events with output guardrails, the semantic cache and the answer records. Collaborators
(retriever and router handles, the guard) are injected.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from indexes.embedder import EmbedderConfig, load_embedder
from serving import edge
from serving.config import GatewayConfig
from serving.errors import InvalidRequest, LimitExceeded, ModelNotFound, NotFound, ServingError, unwrap
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, Usage
from serving.graders import Graders, Verdict
from serving.middleware.cache import SemanticCache, partition_key
from serving.middleware.guard import Guard
from serving.middleware.history import open_history, trim
from serving.middleware.json_mode import generate_json
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

SERVED_TTL_S = 1.0  # how long the gateway reuses the retriever's list of served index versions


def backend_header(backend: str) -> dict[str, str]:
    return {"x-rayrag-backend": backend}


def added(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens, completion_tokens=a.completion_tokens + b.completion_tokens
    )


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


@dataclass(frozen=True)
class Answer:
    """A grounded answer after the self-check: the grounding it finally used, and the verdicts."""

    result: GenerationResult
    grounded: Grounding
    grades: dict[str, Any] | None = None


def grades_summary(first: dict[str, Verdict], final: dict[str, Verdict] | None) -> dict[str, Any]:
    """The verdicts as recorded and returned: the final ones, the first try's when it was redone."""
    last = final or first
    summary: dict[str, Any] = {name: v.model_dump() for name, v in last.items()}
    summary |= {"grounded": last["groundedness"].passed, "regenerated": final is not None}
    if final is not None:
        summary["first_try"] = {name: v.model_dump() for name, v in first.items()}
    return summary


def rag_extra(grounded: Grounding, config: GatewayConfig) -> dict[str, Any]:
    return {
        "index": grounded.result.index,
        "prompt": grounded.prompt,
        "index_version": grounded.result.version,
        "citations": [c.model_dump() for c in citations(grounded.chunks, config.snippet_chars)],
    }


def answer_extra(answer: Answer) -> dict[str, Any]:
    return {"grades": answer.grades} if answer.grades is not None else {}


def answer_headers(result: GenerationResult, extra: dict[str, Any], cacheable: bool) -> dict[str, str]:
    headers = backend_header(result.backend) | ({"x-rayrag-cache": "miss"} if cacheable else {})
    if "grades" in extra:
        headers["x-rayrag-grounded"] = "yes" if extra["grades"]["grounded"] else "no"
    return headers


class Route(NamedTuple):
    """Where a `model` name leads: an index (with its served version) or a generator."""

    index: str | None
    generator: str | None
    version: str | None = None


class GatewayCore:
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
        self.history = open_history(config.history) if config.history.enabled else None
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
        return await generate_json(
            lambda r: self.router.generate.remote(r, generator), generation, self.config.json_retries
        )

    # -- conversation history --------------------------------------------------------------------

    def _with_history(self, who: Principal, session_id: str | None, messages: list[Message]) -> list[Message]:
        """The request's turns after the session's earlier ones (trimmed to the history budget)."""
        if session_id is None:
            return messages
        if self.history is None:
            raise InvalidRequest("conversation history is turned off (serve.gateway.history)", param="session_id")
        session = self.history.load(who.tenant, session_id)
        earlier = trim(session.messages, self.config.history.max_chars) if session else []
        return [*(m for m in messages if m.role == "system"), *earlier, *(m for m in messages if m.role != "system")]

    def _save_turn(self, who: Principal, session_id: str | None, asked: list[Message], answer: str) -> None:
        if session_id is None or self.history is None:
            return
        said = [m for m in asked if m.role != "system"] + [Message(role="assistant", content=answer)]
        self.history.append(who.tenant, session_id, said)

    # -- grounded answers and their self-check ---------------------------------------------------

    async def _grade(self, question: str, result: GenerationResult, grounded: Grounding) -> dict[str, Verdict]:
        passages = [c.text for c in grounded.chunks]
        return await self.graders.grade(question, result.choices[0].text, passages)

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
        second = second.model_copy(update={"usage": added(result.usage, second.usage)})
        return Answer(second, retry, grades_summary(first, await self._grade(search.query, second, retry)))

    @staticmethod
    def _regrounded(generation: GenerationRequest, grounded: Grounding) -> GenerationRequest:
        context = [c.text for c in grounded.chunks]
        return generation.model_copy(update={"messages": grounded.messages, "context": context})

    # -- helpers ---------------------------------------------------------------------------------

    async def _socket_turn(self, websocket: WebSocket, raw: str) -> None:
        rid = edge.new_request_id()
        try:
            who = self.guard.admit(websocket.headers)
            body = ChatCompletionRequest.model_validate_json(raw)
            asked = self.guard.screen_messages(body.messages)
            messages = self._with_history(who, body.session_id, asked)
            index, generator, _ = await self._route(body.model, who)
            grounded = None
            if index is not None:
                search = SearchRequest(query=question_of(messages), index=index)
                grounded = await self._ground(messages, search, body.prompt_template)
                messages = grounded.messages
            generation = self._generation(messages, body, body.token_limit, body.temperature, None, rid, grounded)
            text = ""
            async for delta in self.router.options(stream=True).stream.remote(generation, generator):
                kind = "done" if delta.usage else "delta"
                text += delta.text if delta.index == 0 else ""
                if delta.usage:
                    self.guard.charge(who, delta.usage.total_tokens)
                    self._save_turn(who, body.session_id, asked, text)
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
        vector = (await self._embed([question]))[0]
        params = body.model_dump(
            include={
                "max_tokens",
                "max_completion_tokens",
                "temperature",
                "top_p",
                "n",
                "stop",
                "seed",
                "response_format",
            }
        )
        prompt = self.prompts.get(body.prompt_template).ref
        partition = partition_key(
            tenant=who.tenant, index=index, version=version, prompt=prompt, model=body.model, **params
        )
        return CacheProbe(partition, version, question, vector.tolist(), self.cache.lookup(partition, vector))

    def _cached_reply(self, rid: str, who: Principal, probe: CacheProbe) -> JSONResponse:
        cached, similarity = probe.hit
        reply = cached | {"id": rid, "created": int(time.time())}
        reply["rayrag"] = cached["rayrag"] | {"cache": {"hit": True, "similarity": round(similarity, 4)}}
        headers = {"x-rayrag-cache": "hit", "x-rayrag-cache-similarity": f"{similarity:.4f}"}
        return JSONResponse(reply, headers=headers | backend_header(cached["rayrag"]["backend"]))

    def _sessions(self):
        if self.history is None:
            raise NotFound(
                "conversation history is turned off (serve.gateway.history.enabled)", code="history_disabled"
            )
        return self.history

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
        if self.records is None:
            return
        chunks = [{k: c[k] for k in ("chunk_id", "source", "score")} for c in extra.get("citations", [])]
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
        result = await self.retriever.search.remote(search)
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
        return GenerationRequest(
            messages=messages,
            prompt=prompt,
            max_tokens=limit,
            temperature=temperature,
            request_id=rid or edge.request_id(request),
            context=[c.text for c in grounded.chunks] if grounded else [],
            **sampling,
        )

    async def _chat_stream(
        self, rid: str, body: ChatCompletionRequest, generation: GenerationRequest, generator: str | None,
        extra: dict, who: Principal, asked: list[Message],
    ) -> AsyncIterator[dict]:  # fmt: skip
        model = body.model
        try:
            started: set[int] = set()
            texts: dict[int, str] = {}
            async for delta in self.router.options(stream=True).stream.remote(generation, generator):
                if delta.usage is not None:
                    self.guard.charge(who, delta.usage.total_tokens)
                    streamed = GenerationResult(
                        model=model, backend=delta.backend, choices=[], usage=delta.usage, steps=delta.steps
                    )
                    self._remember(rid, who, "chat", streamed, extra, body.session_id)
                    self._save_turn(who, body.session_id, asked, texts.get(0, ""))
                    rayrag = {"backend": delta.backend, "steps": delta.steps, **extra}
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
