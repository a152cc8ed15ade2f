"""The HTTP edge: request ids and the one place errors become OpenAI's error JSON.

Every error leaves as `{"error": {"message", "type", "param", "code", "request_id"}}`; the id is
the one Serve's proxy puts in the `x-request-id` request and response headers. Validation errors are 400 (OpenAI's status, not FastAPI's 422);
anything unexpected is logged with its traceback and answered 500 without internals.
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


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or new_request_id()


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
    headers = {"retry-after": str(retry_after)} if exc.status in (429, 503) else None
    return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param, rid), exc.status, headers=headers)


def install(app: FastAPI) -> None:
    """Add the request-id middleware and the exception handlers to `app`."""

    @app.middleware("http")
    async def _request_id(request: Request, call_next):
        rid = request.state.request_id = request.headers.get("x-request-id") or new_request_id()
        started = time.perf_counter()
        name = f"{request.method} {request.url.path}"
        with tracer().start_as_current_span(name, attributes={"rayrag.request_id": rid}) as span:
            response = await call_next(request)
            span.set_attributes({"http.route": endpoint_of(request), "http.status_code": response.status_code})
        observe_request(request, response.status_code, time.perf_counter() - started)
        return response

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
