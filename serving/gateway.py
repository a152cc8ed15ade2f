"""The gateway: a FastAPI ingress speaking the OpenAI API, plus /v1/query, /v1/search and a websocket.

It validates and limits requests, resolves `model` (`rag:<index>` answers from that index, a
plain name calls the generator), and talks to the retriever and the router through injected
deployment handles. Errors are mapped once, in `serving.edge`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from ray import serve
from sse_starlette.sse import EventSourceResponse

from serving import edge
from serving.answers import answer_extra, answer_headers, backend_header, rag_extra
from serving.gateway_core import GatewayCore
from serving.generator.protocol import Message, Usage
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
from serving.protocol import GradeRequest, QueryRequest, QueryResponse, SearchRequest, SearchResult
from serving.rag import citations, question_of
from serving.telemetry import metrics

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
        indexes = await self._served_indexes(fresh=True)
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
            if status.backend == "extractive" or not who.may_use_model(status.model):
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
        generation = self._generation(
            grounded.messages, None, body.max_tokens, body.temperature, request, grounded=grounded
        )
        answer = await self._answer(grounded, generation, body.model, search)
        result = self.guard.screen_result(answer.result)
        self._account(who, result.usage, result.model, generation)
        rid = edge.request_id(request)
        self._remember(rid, who, "query", result, rag_extra(answer.grounded, self.config) | answer_extra(answer))
        return QueryResponse(
            id=rid,
            answer=result.choices[0].text,
            citations=citations(answer.grounded.chunks, self.config.snippet_chars),
            index=answer.grounded.result.index,
            version=answer.grounded.result.version,
            model=result.model,
            backend=result.backend,
            usage=usage_dict(result.usage),
            prompt=answer.grounded.prompt,
            steps=result.steps,
            grades=answer.grades,
        )

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(self, body: EmbeddingRequest, request: Request) -> dict:
        who = self.guard.admit(request.headers)
        for text in body.texts:
            self.guard.check_length(text, "input")
        await self._embedding_model(body.model, who)
        vectors, tokens = await self.retriever.embed.remote(body.texts)
        self._account(who, Usage(prompt_tokens=tokens), body.model, None)
        return embedding_response(body.model, vectors, tokens, body.encoding_format)

    # -- generation ------------------------------------------------------------------------------

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        started = time.perf_counter()
        who = self.guard.admit(request.headers)
        asked = self.guard.screen_messages(body.messages)
        messages, extra = self.conversations.with_history(who.tenant, body.session_id, asked), {}
        route = await self._route(body.model, who)
        rid, probe, grounded = edge.request_id(request), None, None
        if route.index is not None:
            probe = await self._cache_probe(who, route, messages, body)
            if probe is not None and probe.hit is not None:
                return self._cached_reply(rid, probe, started)
            search = SearchRequest(query=question_of(messages), index=route.index)
            grounded = await self._ground(messages, search, body.prompt_template)
        generation = self._generation(
            grounded.messages if grounded else messages, body, body.token_limit, body.temperature, request,
            grounded=grounded,
        )  # fmt: skip
        if body.stream:
            extra = rag_extra(grounded, self.config) if grounded else {}
            return EventSourceResponse(self._chat_stream(rid, body, generation, route.generator, extra, who, asked))
        if grounded is not None:
            answer = await self._answer(grounded, generation, route.generator, search)
            result, extra = answer.result, rag_extra(answer.grounded, self.config) | answer_extra(answer)
        else:
            result = await self._generate(generation, route.generator)
        result = self.guard.screen_result(result)
        self._account(who, result.usage, result.model, generation)
        self._remember(rid, who, "chat", result, extra, body.session_id)
        self.conversations.save_turn(who.tenant, body.session_id, asked, result.choices[0].text)
        reply = chat_response(rid, body.model, result, extra | {"steps": result.steps})
        if probe is not None:
            self.cache.store(probe.partition, route.index, probe.version, probe.question, probe.vector, reply)
        return JSONResponse(reply, headers=answer_headers(result, extra, probe is not None))

    @app.post("/v1/completions", tags=["openai"])
    async def completions(self, body: CompletionRequest, request: Request):
        who = self.guard.admit(request.headers)
        text = self.guard.screen(body.text, "prompt")
        index, generator, _ = await self._route(body.model, who)
        rid, extra = edge.request_id(request), {}
        if index is not None:
            search = SearchRequest(query=text, index=index)
            grounded = await self._ground([Message(role="user", content=text)], search, body.prompt_template)
            generation = self._generation(
                grounded.messages, body, body.token_limit, body.temperature, request, grounded=grounded
            )
            extra = rag_extra(grounded, self.config)
        else:
            generation = self._generation(None, body, body.token_limit, body.temperature, request, prompt=text)
        if body.stream:
            return EventSourceResponse(self._completion_stream(rid, body.model, generation, generator, who))
        result = self.guard.screen_result(await self._generate(generation, generator))
        self._account(who, result.usage, result.model, generation)
        self._remember(rid, who, "completion", result, extra)
        reply = completion_response(rid, body.model, result, extra | {"steps": result.steps})
        return JSONResponse(reply, headers=backend_header(result.backend))

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
        metrics.feedback().inc(1, {"rating": body.rating})
        return {"request_id": body.request_id, "stored": True}

    @app.get("/v1/sessions/{session_id}", tags=["rag"])
    async def session(self, session_id: str, request: Request) -> dict:
        """A conversation's stored turns, for the tenant that owns it (others get 404)."""
        who = self.guard.admit(request.headers)
        return {"object": "session", **self.conversations.session(who.tenant, session_id).model_dump()}

    @app.delete("/v1/sessions/{session_id}", tags=["rag"])
    async def delete_session(self, session_id: str, request: Request) -> dict:
        who = self.guard.admit(request.headers)
        self.conversations.forget(who.tenant, session_id)
        return {"id": session_id, "object": "session.deleted", "deleted": True}

    @app.post("/v1/grade", tags=["rag"])
    async def grade(self, body: GradeRequest, request: Request) -> dict:
        """Groundedness and relevance verdicts for any answer: against the given passages, or the
        passages the index returns for the question."""
        who = self.guard.admit(request.headers)
        passages = body.passages
        if passages is None:
            self.guard.check_index(who, body.index)
            search = SearchRequest(query=body.question, index=body.index)
            grounded = await self._ground([Message(role="user", content=body.question)], search, None)
            passages = [c.text for c in grounded.chunks]
        verdicts = await self._graders().grade(body.question, body.answer, passages)
        return {name: v.model_dump() for name, v in verdicts.items()}

    @app.websocket("/v1/chat/ws")
    async def chat_socket(self, websocket: WebSocket) -> None:
        """One JSON chat request per message in; `delta` events, then `done` (or `error`) out."""
        await websocket.accept()
        try:
            while True:
                await self._socket_turn(websocket, await websocket.receive_text())
        except WebSocketDisconnect:
            return
