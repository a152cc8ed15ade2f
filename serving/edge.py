"""The HTTP edge: request ids, the body limit, and the one place errors become OpenAI's error JSON.

Every error leaves as `{"error": {"message", "type", "param", "code", "request_id"}}`. The request
id is made here, by the server, for every request (`x-rayrag-request-id` response header, the `id`
of an answer, the key of its record): a client's `x-request-id` is kept only as a correlation field,
so no client can choose, guess or reuse the id another tenant's answer is stored under. Validation
errors are 400 (OpenAI's status, not FastAPI's 422); anything unexpected is logged with its
traceback and answered 500 without internals.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.errors import ServingError, unwrap
from serving.telemetry import metrics
from serving.telemetry.tracing import tracer

log = logging.getLogger(__name__)


REQUEST_ID_HEADER = "x-rayrag-request-id"
_RID_KEY = REQUEST_ID_HEADER.encode()
CLIENT_ID_CHARS = 128  # a client's correlation id is kept, cut to this length


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or new_request_id()


def client_request_id(request: Request) -> str | None:
    """The client's own `x-request-id` (or the proxy's), for correlation only: never a key."""
    return getattr(request.state, "client_request_id", None)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:24]}"


def error_body(message: str, type_: str, code: str | None, param: str | None, rid: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, "request_id": rid}}


def endpoint_of(request: Request) -> str:
    """The route template (`/v1/records/{request_id}`), so ids do not explode the metric's labels."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def observe_request(request: Request, status: int, seconds: float) -> None:
    endpoint = endpoint_of(request)
    metrics.requests().inc(1, {"endpoint": endpoint, "status": str(status)})
    metrics.request_seconds().observe(seconds, {"endpoint": endpoint})


def count_error(request: Request, error_type: str) -> None:
    metrics.errors().inc(1, {"type": error_type, "endpoint": endpoint_of(request)})


def error_response(exc: ServingError, rid: str) -> JSONResponse:
    retry_after = getattr(exc, "retry_after", 1)
    headers = {REQUEST_ID_HEADER: rid} | ({"retry-after": str(retry_after)} if exc.status in (429, 503) else {})
    return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param, rid), exc.status, headers=headers)


class PayloadTooLarge(ServingError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class BodyLimit:
    """Refuse a request body over `max_bytes` with 413 before the app reads or parses any of it.

    Hand-written because neither Starlette nor Serve's proxy bounds a body: it reads the body up to
    the limit (the app would read it whole anyway), answers 413 as soon as it is exceeded, whether
    the client sent a `content-length` or chunks, and else replays what it read to the app."""

    def __init__(self, app, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.larger = app, max_bytes, larger or {}  # path suffix -> its own limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = next((n for suffix, n in self.larger.items() if scope["path"].endswith(suffix)), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        messages, size = [], int(declared) if declared.isdigit() else 0
        if size <= limit:
            size = 0
            while True:
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                if size > limit or not message.get("more_body"):
                    break
        if size > limit:
            refusal = PayloadTooLarge(f"request body is over the limit of {limit} bytes", param="body")
            return await error_response(refusal, new_request_id())(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


class RequestContext:
    """Give every HTTP request its server-made id (request state, response header, span), and count
    and time it once its response has started.

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs the endpoint in a task group behind memory streams, which cost the gateway about a tenth of
    its CPU per /v1/search here (py-spy under 32 clients), and buffers nothing we need."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = new_request_id()
        headers = dict(scope["headers"])
        client_id = headers.get(b"x-request-id", b"").decode("latin-1")[:CLIENT_ID_CHARS] or None
        scope.setdefault("state", {}).update(request_id=rid, client_request_id=client_id)
        started, status = time.perf_counter(), [500]

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != _RID_KEY]  # error bodies set it too
                message["headers"] = [*kept, (_RID_KEY, rid.encode())]
            await send(message)

        name = f"{scope['method']} {scope['path']}"
        attributes = {"rayrag.request_id": rid} | ({"rayrag.client_request_id": client_id} if client_id else {})
        with tracer().start_as_current_span(name, attributes=attributes) as span:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                request = Request(scope)
                span.set_attributes({"http.route": endpoint_of(request), "http.status_code": status[0]})
                observe_request(request, status[0], time.perf_counter() - started)


def install(app: FastAPI, max_body_bytes: int, larger: dict[str, int] | None = None) -> None:
    """Add the body limit (`larger`: routes, by path suffix, with their own: uploads), the request
    context (ids, span, metrics) and the exception handlers."""
    app.add_middleware(RequestContext)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, larger=larger)  # outermost: before anything reads it

    @app.exception_handler(ServingError)
    async def _serving(request: Request, exc: ServingError) -> JSONResponse:
        exc = unwrap(exc)
        count_error(request, exc.code or exc.type)
        return error_response(exc, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        bad_json = first.get("type") == "json_invalid"
        loc = [] if bad_json else [str(p) for p in first["loc"] if p != "body"]
        message = "request body is not valid JSON" if bad_json else first["msg"]
        count_error(request, "invalid_request")
        body = error_body(
            f"{'.'.join(loc) + ': ' if loc else ''}{message}",
            "invalid_request_error",
            "invalid_request",
            ".".join(loc) or None,
            request_id(request),
        )
        return JSONResponse(body, 400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        body = error_body(str(exc.detail), "invalid_request_error", code, None, request_id(request))
        return JSONResponse(body, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        count_error(request, "internal_error")
        body = error_body("internal error", "server_error", "internal_error", None, request_id(request))
        return JSONResponse(body, 500)


def sse_error(exc: Exception, rid: str) -> str:
    """An error inside an SSE stream (headers are already sent): a data event OpenAI clients raise on."""
    exc = unwrap(exc)
    if isinstance(exc, ServingError):
        return json.dumps(error_body(exc.message, exc.type, exc.code, exc.param, rid))
    log.error("stream failed: %r", exc)
    return json.dumps(error_body("internal error", "server_error", "internal_error", None, rid))
