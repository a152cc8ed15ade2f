"""The gateway: a FastAPI app speaking the OpenAI API, plus /v1/query, /v1/search and a websocket.

`create_app(flow)` builds the app around one `AnswerFlow` (serving/flow.py); every answering route
is a thin adapter over it (serving/transports.py). The app is built when a replica starts
(`Gateway.__serve_build_asgi_app__`, Serve's late-bound ingress), not at import time, so a unit
test builds the very same routes over a flow with fake collaborators. Errors are mapped once, in
`serving.edge`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from ray import serve
from sse_starlette.sse import EventSourceResponse

from indexes.config import IndexesConfig
from indexes.embedder import EmbedderConfig
from serving import edge, files_api, mcp, page, transports
from serving.answers import answer_headers
from serving.config import GatewayConfig, RetrieverConfig, SearchCoalescing
from serving.flow import AnswerFlow
from serving.flow_support import ALLOWED_MODELS, HandleRetriever, HandleRouter
from serving.generator.protocol import Message, Usage
from serving.ingest import Ingest
from serving.openai_protocol import (
    RAG_PREFIX,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModerationRequest,
    embedding_response,
    model_card,
)
from serving.protocol import (
    CHUNK_ID,
    DocumentResult,
    GradeRequest,
    PassageResult,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResult,
)
from serving.retriever import Retriever
from serving.stores.records import Feedback
from serving.telemetry import metrics
from serving.telemetry.tracing import setup_tracing
from serving.vector_stores import VectorStores


async def flow_of(request: Request) -> AnswerFlow:
    """Async on purpose: FastAPI runs a sync dependency in its threadpool, a thread hop per request."""
    return request.app.state.flow


Flow = Depends(flow_of)


def _ids(request: Request) -> tuple[str, str | None]:
    return edge.request_id(request), edge.client_request_id(request)


def create_app(flow: AnswerFlow, ingest: Ingest | None = None) -> FastAPI:
    """The gateway's routes over `flow`, and the ingest routes over `ingest` (off unless configured)."""
    ingest = ingest or Ingest(flow.config.ingest, IndexesConfig())
    app = FastAPI(title="rayrag", version="0.1.0", description="OpenAI-compatible RAG serving on Ray Serve.",
                  lifespan=_lifespan)  # fmt: skip
    app.state.flow = flow
    app.state.sockets = transports.SocketGate(flow.config.websocket.max_connections_per_key)
    edge.install(app, flow.config.limits.max_body_bytes, files_api.body_limits(ingest))
    _health_routes(app)
    page.install(app)
    _answer_routes(app)
    _retrieval_routes(app)
    _record_routes(app)
    files_api.install(app, ingest)
    stores = VectorStores(flow, ingest)
    files_api.install_vector_stores(app, stores)
    app.state.mcp_sessions = mcp.install(app, flow, stores)  # `/mcp`: the same flow as MCP tools
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What runs beside the routes while the app serves: the MCP SDK's session manager."""
    async with app.state.mcp_sessions:
        yield


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(flow: AnswerFlow = Flow) -> JSONResponse:
        """200 when every configured index is loaded and the chain's first model generator is ready."""
        ready, body = await flow.readiness()
        return JSONResponse({"ready": ready} if flow.guard.private else body, 200 if ready else 503)

    @app.get("/v1/models", tags=["openai"])
    async def models(request: Request, flow: AnswerFlow = Flow) -> dict:
        who = flow.admit(request.headers)
        indexes = await flow.indexes_for(who)
        generators: dict[str, list] = {}
        for status in await flow.router.models():
            if status.backend == "extractive" or not who.may_use_model(status.model):
                continue
            generators.setdefault(status.model, []).append(status)
        data = [
            model_card(name, backends=[s.backend for s in group], ready=any(s.ready for s in group))
            for name, group in generators.items()
        ]
        data += [
            model_card(f"{RAG_PREFIX}{name}", index_version=info["version"], chunks=info["chunks"])
            for name, info in indexes.items()
        ]
        return {"object": "list", "data": data}


def _answer_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request, flow: AnswerFlow = Flow):
        started = time.perf_counter()
        turn = transports.chat_turn(flow.admit(request.headers), *_ids(request), body)
        if body.stream:
            plan = await flow.plan(turn)  # refusals before the stream starts are plain HTTP errors
            return EventSourceResponse(transports.chat_sse(turn, flow.stream(plan), flow.grounding(plan)))
        outcome = await flow.answer(turn)
        return JSONResponse(transports.chat_json(outcome, body.model), headers=answer_headers(outcome, started))

    @app.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionRequest, request: Request, flow: AnswerFlow = Flow):
        turn = transports.completion_turn(flow.admit(request.headers), *_ids(request), body)
        if body.stream:
            plan = await flow.plan(turn)
            return EventSourceResponse(transports.completion_sse(turn, flow.stream(plan)))
        outcome = await flow.answer(turn)
        return JSONResponse(transports.completion_json(outcome, body.model), headers=answer_headers(outcome))

    @app.post("/v1/query", tags=["rag"], response_model=QueryResponse)
    async def query(body: QueryRequest, request: Request, flow: AnswerFlow = Flow) -> QueryResponse:
        turn = transports.query_turn(flow.admit(request.headers), *_ids(request), body)
        return transports.query_json(await flow.answer(turn))

    @app.websocket("/v1/chat/ws")
    async def chat_socket(websocket: WebSocket) -> None:
        """One JSON chat request per message in; `delta` events, then `done` (or `error`) out."""
        await transports.chat_socket(websocket.app.state.flow, websocket, websocket.app.state.sockets)


def _retrieval_routes(app: FastAPI) -> None:
    @app.post("/v1/search", tags=["rag"], response_model=SearchResult)
    async def search(body: SearchRequest, request: Request, flow: AnswerFlow = Flow) -> SearchResult:
        return await flow.search(flow.admit(request.headers), body)

    @app.get("/v1/indexes/{index}/chunks/{chunk_id}", tags=["rag"], response_model=PassageResult)
    async def passage(
        index: str, chunk_id: Annotated[str, PathParam(pattern=CHUNK_ID)], request: Request, flow: AnswerFlow = Flow
    ) -> PassageResult:
        """One chunk of a served index, whole: what a citation's `chunk_id` names."""
        flow.guard.check_index(flow.admit(request.headers), index)
        return await flow.retriever.passage(index, chunk_id)

    @app.get("/v1/indexes/{index}/document", tags=["rag"], response_model=DocumentResult)
    async def document(
        index: str, source: Annotated[str, Query(min_length=1, max_length=2048)], request: Request,
        flow: AnswerFlow = Flow,
    ) -> DocumentResult:  # fmt: skip
        """A citation's source document as the index holds it, section by section (never read from disk)."""
        flow.guard.check_index(flow.admit(request.headers), index)
        return await flow.retriever.document(index, source)

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(body: EmbeddingRequest, request: Request, flow: AnswerFlow = Flow) -> dict:
        who = flow.admit(request.headers)
        flow.guard.check_count(len(body.texts), flow.config.limits.max_inputs, "input")
        for text in body.texts:
            flow.guard.check_length(text, "input")
        await flow.check_embedding_model(body.model, who)
        vectors, tokens = await flow.retriever.embed(body.texts)
        flow.guard.charge(who, Usage(prompt_tokens=tokens).total_tokens)
        return embedding_response(body.model, vectors, tokens, body.encoding_format)

    @app.post("/v1/moderations", tags=["openai"])
    async def moderations(body: ModerationRequest, request: Request, flow: AnswerFlow = Flow) -> dict:
        """The gateway's input guardrails as OpenAI's moderation endpoint."""
        flow.admit(request.headers)
        flow.guard.check_count(len(body.texts), flow.config.limits.max_inputs, "input")
        for text in body.texts:
            flow.guard.check_length(text, "input")
        verdicts = [flow.guard.guardrails.check(text) for text in body.texts]
        results = [{"flagged": v.any, "categories": v.flagged, "category_scores": v.scores} for v in verdicts]
        return {"id": f"modr-{edge.request_id(request)}", "model": "rayrag-guardrails", "results": results}

    @app.post("/v1/grade", tags=["rag"])
    async def grade(body: GradeRequest, request: Request, flow: AnswerFlow = Flow) -> dict:
        """Groundedness and relevance verdicts for any answer: against the given passages, or the
        passages the index returns for the question."""
        who = flow.admit(request.headers)
        passages = body.passages
        if passages is not None:
            flow.guard.check_count(len(passages), flow.config.limits.max_passages, "passages")
            for passage in passages:
                flow.guard.check_length(passage, "passages")
        else:
            flow.guard.check_index(who, body.index)
            search = SearchRequest(query=body.question, index=body.index)
            grounded = await flow.ground([Message(role="user", content=body.question)], search, None)
            passages = [c.text for c in grounded.chunks]
        ALLOWED_MODELS.set(who.model_scope)  # the LLM judge: the key's models only
        verdicts = await flow.graders_or_404().grade(body.question, body.answer, passages)
        return {name: v.model_dump() for name, v in verdicts.items()}


def _record_routes(app: FastAPI) -> None:
    @app.get("/v1/records/{request_id}", tags=["rag"])
    async def record(request_id: str, request: Request, flow: AnswerFlow = Flow) -> dict:
        """How an answer was made: chunks and scores, prompt and index versions, model, backend, usage, feedback."""
        return flow.records_or_404().get(request_id, flow.admit(request.headers).tenant)

    @app.post("/v1/feedback", tags=["rag"])
    async def feedback(body: Feedback, request: Request, flow: AnswerFlow = Flow) -> dict:
        """Thumbs up/down (and a comment) on an answer, stored with its record for evaluation."""
        flow.records_or_404().add_feedback(body, flow.admit(request.headers).tenant)
        metrics.feedback().inc(1, {"rating": body.rating})
        return {"request_id": body.request_id, "stored": True}

    @app.get("/v1/sessions/{session_id}", tags=["rag"])
    async def session(session_id: str, request: Request, flow: AnswerFlow = Flow) -> dict:
        """A conversation's stored turns, for the tenant that owns it (others get 404)."""
        who = flow.admit(request.headers)
        return {"object": "session", **flow.conversations.session(who, session_id).model_dump()}

    @app.delete("/v1/sessions/{session_id}", tags=["rag"])
    async def delete_session(session_id: str, request: Request, flow: AnswerFlow = Flow) -> dict:
        flow.conversations.forget(flow.admit(request.headers), session_id)
        return {"id": session_id, "object": "session.deleted", "deleted": True}


@serve.ingress()
class Gateway:
    """The Serve deployment: builds the flow over the retriever's and router's handles, then the app."""

    def __init__(
        self, config: GatewayConfig, retriever: Any, router: Any, *, indexes: list[str], max_top_k: int,
        embedder: EmbedderConfig | None = None, index_settings: IndexesConfig | None = None,
        coalesce: SearchCoalescing | None = None, colocated: RetrieverConfig | None = None,
    ) -> None:  # fmt: skip
        setup_tracing(config.telemetry, "rayrag-gateway")  # the replica process's tracer provider, once
        index_settings = index_settings or IndexesConfig()
        if colocated is not None:  # retriever.placement: gateway: this replica opens and searches the indexes
            local = Retriever(colocated, index_settings)
            port, loaded = local, local.embedder  # one embedder in the process, for the cache and the search
        else:
            port, loaded = HandleRetriever(retriever, coalesce), None
        self.flow = AnswerFlow(
            config, port, HandleRouter(router), indexes=indexes, max_top_k=max_top_k, embedder=embedder,
            loaded_embedder=loaded,
        )  # fmt: skip
        # uploads and index jobs write with the served indexes' own settings (root, embedder)
        self.ingest = Ingest(config.ingest, index_settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.flow, self.ingest)
