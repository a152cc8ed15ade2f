"""The gateway: a FastAPI ingress speaking the OpenAI API, plus /v1/query, /v1/search and a websocket.

It validates and limits requests, resolves `model` (`rag:<index>` answers from that index, a
plain name calls the generator), and talks to the retriever and the router through injected
deployment handles. Errors are mapped once, in `serving.edge`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from ray import serve
from sse_starlette.sse import EventSourceResponse

from serving import edge
from serving.gateway_core import GatewayCore, backend_header, rag_extra
from serving.generator.protocol import Message
from serving.middleware.records import Feedback
from serving.openai_protocol import (
    RAG_PREFIX,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModerationRequest,
    chat_response,
    completion_response,
    embedding_response,
    model_card,
    usage_dict,
)
from serving.protocol import QueryRequest, QueryResponse, SearchRequest, SearchResult
from serving.rag import citations, question_of

app = FastAPI(title="rayrag", version="0.1.0", description="OpenAI-compatible RAG serving on Ray Serve.")
edge.install(app)


@serve.deployment
@serve.ingress(app)
class Gateway(GatewayCore):
    # -- health and catalogue --------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(self) -> JSONResponse:
        indexes = await self.retriever.describe.remote()
        generators = [s.model_dump() for s in await self.router.models.remote()]
        ready = any(g["ready"] for g in generators)
        body = (
            {"ready": ready} if self.guard.private else {"ready": ready, "indexes": indexes, "generators": generators}
        )
        return JSONResponse(body, 200 if ready else 503)

    @app.get("/v1/models", tags=["openai"])
    async def models(self, request: Request) -> dict:
        who = self.guard.admit(request.headers)
        indexes = {n: i for n, i in (await self.retriever.describe.remote()).items() if who.may_use_index(n)}
        generators: dict[str, list] = {}
        for status in await self.router.models.remote():
            if not who.may_use_model(status.model):
                continue
            generators.setdefault(status.model, []).append(status)
        data = [
            model_card(name, backends=[s.backend for s in group], ready=any(s.ready for s in group))
            for name, group in generators.items()
        ]
        data += [model_card(f"{RAG_PREFIX}{name}", index_version=info["version"]) for name, info in indexes.items()]
        return {"object": "list", "data": data}

    # -- retrieval -------------------------------------------------------------------------------

    @app.post("/v1/search", tags=["rag"], response_model=SearchResult)
    async def search(self, body: SearchRequest, request: Request) -> SearchResult:
        self.guard.check_index(self.guard.admit(request.headers), body.index)
        body = body.model_copy(update={"query": self.guard.screen(body.query, "query")})
        return await self.retriever.search.remote(body)

    @app.post("/v1/query", tags=["rag"], response_model=QueryResponse)
    async def query(self, body: QueryRequest, request: Request) -> QueryResponse:
        who = self.guard.admit(request.headers)
        self.guard.check_index(who, body.index)
        if body.model is not None:
            self.guard.check_model(who, body.model)
        body = body.model_copy(update={"query": self.guard.screen(body.query, "query")})
        search = SearchRequest(**body.model_dump(include=set(SearchRequest.model_fields)))
        grounded = await self._ground([Message(role="user", content=body.query)], search, body.prompt_template)
        generation = await self.router.generate.remote(
            self._generation(grounded.messages, None, body.max_tokens, body.temperature, request), body.model
        )
        generation = self.guard.screen_result(generation)
        self.guard.charge(who, generation.usage.total_tokens)
        rid = edge.request_id(request)
        self._remember(rid, who, "query", generation, rag_extra(grounded, self.config))
        return QueryResponse(
            id=rid,
            answer=generation.choices[0].text,
            citations=citations(grounded.chunks, self.config.snippet_chars),
            index=grounded.result.index,
            version=grounded.result.version,
            model=generation.model,
            backend=generation.backend,
            usage=usage_dict(generation.usage),
            prompt=grounded.prompt,
        )

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(self, body: EmbeddingRequest, request: Request) -> dict:
        who = self.guard.admit(request.headers)
        for text in body.texts:
            self.guard.check_length(text, "input")
        await self._embedding_model(body.model, who)
        vectors, tokens = await self.retriever.embed.remote(body.texts)
        self.guard.charge(who, tokens)
        return embedding_response(body.model, vectors, tokens, body.encoding_format)

    # -- generation ------------------------------------------------------------------------------

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        who = self.guard.admit(request.headers)
        messages, extra = self.guard.screen_messages(body.messages), {}
        route = await self._route(body.model, who)
        index, generator = route.index, route.generator
        rid, probe = edge.request_id(request), None
        if index is not None:
            probe = await self._cache_probe(who, route, messages, body)
            if probe is not None and probe.hit is not None:
                return self._cached_reply(rid, who, probe)
            search = SearchRequest(query=question_of(messages), index=index)
            grounded = await self._ground(messages, search, body.prompt_template)
            messages, extra = grounded.messages, rag_extra(grounded, self.config)
        generation = self._generation(messages, body, body.token_limit, body.temperature, request)
        if body.stream:
            chunks = self._chat_stream(rid, body.model, generation, generator, extra, who)
            return EventSourceResponse(chunks)
        result = self.guard.screen_result(await self.router.generate.remote(generation, generator))
        self.guard.charge(who, result.usage.total_tokens)
        self._remember(rid, who, "chat", result, extra)
        reply = chat_response(rid, body.model, result, extra)
        if probe is not None:
            self.cache.store(probe.partition, index, probe.version, probe.question, probe.vector, reply)
        headers = backend_header(result.backend) | ({"x-rayrag-cache": "miss"} if probe is not None else {})
        return JSONResponse(reply, headers=headers)

    @app.post("/v1/completions", tags=["openai"])
    async def completions(self, body: CompletionRequest, request: Request):
        who = self.guard.admit(request.headers)
        text = self.guard.screen(body.text, "prompt")
        index, generator, _ = await self._route(body.model, who)
        rid, extra = edge.request_id(request), {}
        if index is not None:
            search = SearchRequest(query=text, index=index)
            grounded = await self._ground([Message(role="user", content=text)], search, body.prompt_template)
            generation = self._generation(grounded.messages, body, body.token_limit, body.temperature, request)
            extra = rag_extra(grounded, self.config)
        else:
            generation = self._generation(None, body, body.token_limit, body.temperature, request, prompt=text)
        if body.stream:
            return EventSourceResponse(self._completion_stream(rid, body.model, generation, generator, who))
        result = self.guard.screen_result(await self.router.generate.remote(generation, generator))
        self.guard.charge(who, result.usage.total_tokens)
        self._remember(rid, who, "completion", result, extra)
        return JSONResponse(completion_response(rid, body.model, result, extra), headers=backend_header(result.backend))

    @app.post("/v1/moderations", tags=["openai"])
    async def moderations(self, body: ModerationRequest, request: Request) -> dict:
        """The gateway's input guardrails as OpenAI's moderation endpoint."""
        self.guard.admit(request.headers)
        for text in body.texts:
            self.guard.check_length(text, "input")
        verdicts = [self.guard.guardrails.check(text) for text in body.texts]
        results = [{"flagged": v.any, "categories": v.flagged, "category_scores": v.scores} for v in verdicts]
        return {"id": f"modr-{edge.request_id(request)}", "model": "rayrag-guardrails", "results": results}

    @app.get("/v1/records/{request_id}", tags=["rag"])
    async def record(self, request_id: str, request: Request) -> dict:
        """How an answer was made: chunks and scores, prompt and index versions, model, backend, usage, feedback."""
        who = self.guard.admit(request.headers)
        return self._records().get(request_id, who.tenant)

    @app.post("/v1/feedback", tags=["rag"])
    async def feedback(self, body: Feedback, request: Request) -> dict:
        """Thumbs up/down (and a comment) on an answer, stored with its record for evaluation."""
        who = self.guard.admit(request.headers)
        self._records().add_feedback(body, who.tenant)
        return {"request_id": body.request_id, "stored": True}

    @app.websocket("/v1/chat/ws")
    async def chat_socket(self, websocket: WebSocket) -> None:
        """One JSON chat request per message in; `delta` events, then `done` (or `error`) out."""
        await websocket.accept()
        try:
            while True:
                await self._socket_turn(websocket, await websocket.receive_text())
        except WebSocketDisconnect:
            return
