"""The MCP server: an agent searches an index and gets cited answers through the Model Context Protocol.

One tool set (`build_server`), two doors, so a tool cannot behave differently on either:

- `/mcp` on the gateway (streamable HTTP, stateless, JSON responses: any gateway replica answers
  any call, nothing is kept between calls). Every MCP request passes the gateway's admission first
  (`McpDoor`: the API key of `Authorization: Bearer`, the per-key request quota), is refused with
  the REST routes' status and error JSON, and the tools then run the gateway's own flow
  (`FlowCalls`: `AnswerFlow.search`, `AnswerFlow.answer`, `AnswerFlow.indexes_for`), so a search or an
  answer is screened, scoped to the key's indexes, charged and recorded exactly as over REST.
- `rayrag mcp` (stdio, for a desktop client): the same tools calling a running gateway's REST API
  with a key from the environment (`HttpCalls`), so the gateway still does every check.

A refused call (a 4xx from the flow) is a tool error whose text gives the status and code
(`403 permission_denied: ...`), what an agent can read and act on. The SDK is `mcp` 2.x
(`MCPServer`, formerly FastMCP). `add_documents` (a key with an ingest scope) uploads and adds
documents as a vector-store file batch (serving/vector_stores.py): the index job starts, and each
file's status says when it is searchable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.routing import Route

from serving import edge, transports
from serving.edge import PayloadTooLarge
from serving.errors import ServingError, unwrap
from serving.protocol import QueryRequest, QueryResponse, SearchRequest, SearchResult

PATH = "/mcp"
MAX_DOCUMENTS = 20  # per add_documents call; each is also bounded as an upload (ingest.max_file_bytes)
INSTRUCTIONS = (
    "rayrag serves versioned document indexes. Call list_indexes first; search returns passages with their "
    "source, section and score; answer returns a generated answer whose [n] markers cite its passages."
)


class Filters(BaseModel):
    """What `/v1/search` filters on, as the tool's `filters` argument."""

    source: str | None = Field(default=None, description="exact source path or a glob, e.g. '*/library/csv.html'")
    section: str | None = Field(default=None, description="case-insensitive substring of the section title")


class IndexCard(BaseModel):
    index: str
    version: str
    chunks: int
    model: str = Field(description="the chat model name that answers from this index")


class Calls(Protocol):
    """What the tools need from a door: the caller is found from the MCP request's context."""

    async def indexes(self, ctx: Context) -> dict[str, dict]: ...
    async def search(self, ctx: Context, body: SearchRequest) -> SearchResult: ...
    async def answer(self, ctx: Context, body: QueryRequest) -> QueryResponse: ...
    async def add(self, ctx: Context, index: str, documents: list[Document]) -> list[dict]: ...


class Document(BaseModel):
    """A document `add_documents` uploads: its name (the extension picks the parser) and its text."""

    filename: str = Field(min_length=1, max_length=128)
    content: str = Field(min_length=1)


def build_server(calls: Calls) -> MCPServer:
    """The tools, each a thin adapter over `calls`; arguments become the REST bodies (their bounds)."""
    server = MCPServer(name="rayrag", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(description="The indexes this key may search, with their versions and sizes.")
    async def list_indexes(ctx: Context) -> list[IndexCard]:
        described = await _refusals_as_tool_errors(calls.indexes(ctx))
        return [
            IndexCard(index=n, version=i["version"], chunks=i["chunks"], model=f"rag:{n}") for n, i in described.items()
        ]

    @server.tool(description="Passages of an index most relevant to a query, best first, with where each came from.")
    async def search(
        index: str, query: str, ctx: Context, top_k: int = 5, filters: Filters | None = None
    ) -> SearchResult:
        body = _body(SearchRequest, index=index, query=query, top_k=top_k, **(filters or Filters()).model_dump())
        return await _refusals_as_tool_errors(calls.search(ctx, body))

    @server.tool(description="An answer to a question from an index's passages; [n] in it cites citations[n-1].")
    async def answer(index: str, question: str, ctx: Context, max_tokens: int | None = None) -> QueryResponse:
        body = _body(QueryRequest, index=index, query=question, max_tokens=max_tokens)
        return await _refusals_as_tool_errors(calls.answer(ctx, body))

    @server.tool(
        description="Add text documents to an index (a key with an ingest scope for it): they are "
        "uploaded, the index job starts, and each file's status says when it is searchable."
    )
    async def add_documents(index: str, documents: list[Document], ctx: Context) -> list[dict]:
        if not 1 <= len(documents) <= MAX_DOCUMENTS:
            raise ToolError(f"400 invalid_request: documents: send 1 to {MAX_DOCUMENTS} documents")
        return await _refusals_as_tool_errors(calls.add(ctx, index, documents))

    return server


def _body(model: type[BaseModel], **fields: Any) -> Any:
    """The REST request the tool stands for; a bad argument is a tool error naming it (a 400 over REST)."""
    try:
        return model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ToolError(f"400 invalid_request: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


async def _refusals_as_tool_errors(call: Any) -> Any:
    try:
        return await call
    except ServingError as exc:
        exc = unwrap(exc)
        raise ToolError(f"{exc.status} {exc.code or exc.type}: {exc.message}") from None


# -- the gateway's door ----------------------------------------------------------------------------


class FlowCalls:
    """The tools over the gateway's flow and vector stores (uploads, jobs); the caller is the one
    `McpDoor` admitted for this request."""

    def __init__(self, flow: Any, stores: Any) -> None:
        self.flow, self.stores = flow, stores

    @staticmethod
    def _request(ctx: Context) -> Request:
        return ctx.request_context.request

    def _who(self, ctx: Context) -> Any:
        return self._request(ctx).state.principal

    async def indexes(self, ctx: Context) -> dict[str, dict]:
        return await self.flow.indexes_for(self._who(ctx))

    async def search(self, ctx: Context, body: SearchRequest) -> SearchResult:
        return await self.flow.search(self._who(ctx), body)

    async def answer(self, ctx: Context, body: QueryRequest) -> QueryResponse:
        request = self._request(ctx)
        turn = transports.query_turn(self._who(ctx), edge.request_id(request), edge.client_request_id(request), body)
        return transports.query_json(await self.flow.answer(turn))

    async def add(self, ctx: Context, index: str, documents: list[Document]) -> list[dict]:
        """Upload each document, then add them to the index as one vector-store file batch."""
        who, ingest = self._who(ctx), self.stores.ingest
        ingest.may_write(who, index)
        limit = ingest.config.max_file_bytes
        data = [(d.filename, d.content.encode()) for d in documents]
        if too_big := [name for name, content in data if len(content) > limit]:
            raise PayloadTooLarge(f"documents over the limit of {limit} bytes: {', '.join(too_big)}", param="documents")
        files = [await ingest.upload(who, name, content, "assistants") for name, content in data]
        return await self.stores.add(who, f"vs_{index}", [f.id for f in files])


class McpDoor:
    """Admission before the MCP app: every MCP HTTP request is one admitted request of its key."""

    def __init__(self, app: Any, flow: Any) -> None:
        self.app, self.flow = app, flow

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            try:
                scope.setdefault("state", {})["principal"] = self.flow.admit(request.headers)
            except ServingError as exc:
                edge.count_error(request, unwrap(exc).code or unwrap(exc).type)
                await edge.error_response(unwrap(exc), edge.request_id(request))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: Any, flow: Any, stores: Any) -> contextlib.AbstractAsyncContextManager:
    """Route `/mcp` to the MCP app behind `McpDoor`; returns what the app's lifespan must enter (the
    SDK's session manager runs a task group for the requests it serves)."""
    server = build_server(FlowCalls(flow, stores))
    mcp_app = server.streamable_http_app(
        streamable_http_path=PATH, stateless_http=True, json_response=True, host=flow.config.host
    )
    endpoint = next(route.endpoint for route in mcp_app.routes if getattr(route, "path", None) == PATH)
    app.router.routes.append(Route(PATH, endpoint=McpDoor(endpoint, flow), methods=["GET", "POST", "DELETE"]))
    return server.session_manager.run()


# -- the stdio door --------------------------------------------------------------------------------


class HttpCalls:
    """The tools over a running gateway's REST API (`rayrag mcp`): the gateway checks the key."""

    def __init__(self, url: str, key: str | None, timeout_s: float = 300.0) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def _call(self, method: str, path: str, body: BaseModel | dict | None = None) -> dict:
        payload = body.model_dump(exclude_none=True) if isinstance(body, BaseModel) else body
        reply = await self.http.request(method, path, json=payload)
        return _checked(reply)

    async def indexes(self, ctx: Context) -> dict[str, dict]:
        models = (await self._call("GET", "/v1/models"))["data"]
        return {
            m["id"].removeprefix("rag:"): {"version": m.get("index_version", ""), "chunks": m.get("chunks", 0)}
            for m in models if m["id"].startswith("rag:")
        }  # fmt: skip

    async def search(self, ctx: Context, body: SearchRequest) -> SearchResult:
        return SearchResult(**await self._call("POST", "/v1/search", body))

    async def answer(self, ctx: Context, body: QueryRequest) -> QueryResponse:
        return QueryResponse(**await self._call("POST", "/v1/query", body))

    async def add(self, ctx: Context, index: str, documents: list[Document]) -> list[dict]:
        file_ids = []
        for document in documents:
            upload = {"file": (document.filename, document.content.encode())}
            reply = await self.http.post("/v1/files", files=upload, data={"purpose": "assistants"})
            file_ids.append(_checked(reply)["id"])
        await self._call("POST", f"/v1/vector_stores/vs_{index}/file_batches", {"file_ids": file_ids})
        return [await self._call("GET", f"/v1/vector_stores/vs_{index}/files/{f}") for f in file_ids]


def _checked(reply: httpx.Response) -> dict:
    """The gateway's JSON, or its refusal as a tool error with the same status and code."""
    if reply.status_code != 200:
        error: Mapping[str, Any] = {}
        with contextlib.suppress(ValueError):
            error = reply.json().get("error") or {}
        raise ToolError(
            f"{reply.status_code} {error.get('code') or 'error'}: {error.get('message') or reply.text[:200]}"
        )
    return reply.json()


def run_stdio(url: str, key: str | None) -> None:
    """`rayrag mcp`: serve the tools on stdin/stdout until the client closes them."""
    build_server(HttpCalls(url, key)).run("stdio")
