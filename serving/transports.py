"""The transports: thin adapters between a wire format and the answer flow (serving/flow.py).

Each turns a request body into a `Turn` and the flow's `Outcome` or `Delta`s into its format:
OpenAI JSON, OpenAI SSE chunks, websocket events. No stage lives here: whatever the flow
guarantees (screened, charged, recorded, remembered) holds for every one of them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from serving import edge
from serving.answers import Outcome, Turn
from serving.errors import ServingError
from serving.flow import AnswerFlow
from serving.generator.protocol import Delta, Message
from serving.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    usage_dict,
)
from serving.protocol import QueryRequest, QueryResponse, SearchRequest
from serving.rag import citations_of
from serving.stores.keys import Principal


def _sampling(body: SamplingFields) -> dict[str, Any]:
    response_format = body.response_format.for_generation() if body.response_format else None
    return {"n": body.n, "top_p": body.top_p, "stop": body.stop_list, "seed": body.seed,
            "response_format": response_format}  # fmt: skip


def chat_turn(who: Principal, rid: str, client_rid: str | None, body: ChatCompletionRequest) -> Turn:
    return Turn(
        "chat", who, rid, body.model, messages=body.messages, max_tokens=body.token_limit,
        temperature=body.temperature, sampling=_sampling(body), session_id=body.session_id,
        prompt_template=body.prompt_template, client_rid=client_rid,
    )  # fmt: skip


def completion_turn(who: Principal, rid: str, client_rid: str | None, body: CompletionRequest) -> Turn:
    return Turn(
        "completion", who, rid, body.model, prompt=body.text, max_tokens=body.token_limit,
        temperature=body.temperature, sampling=_sampling(body), prompt_template=body.prompt_template,
        client_rid=client_rid,
    )  # fmt: skip


def query_turn(who: Principal, rid: str, client_rid: str | None, body: QueryRequest) -> Turn:
    search = SearchRequest(**body.model_dump(include=set(SearchRequest.model_fields)))
    return Turn(
        "query", who, rid, body.model, messages=[Message(role="user", content=body.query)], search=search,
        max_tokens=body.max_tokens, temperature=body.temperature, prompt_template=body.prompt_template,
        client_rid=client_rid,
    )  # fmt: skip


def _rayrag(outcome: Outcome) -> dict[str, Any]:
    return outcome.extra | {"steps": outcome.result.steps}


def chat_json(outcome: Outcome, model: str) -> dict[str, Any]:
    return chat_response(outcome.rid, model, outcome.result, _rayrag(outcome))


def completion_json(outcome: Outcome, model: str) -> dict[str, Any]:
    return completion_response(outcome.rid, model, outcome.result, _rayrag(outcome))


def query_json(outcome: Outcome) -> QueryResponse:
    extra, result = outcome.extra, outcome.result
    return QueryResponse(
        id=outcome.rid, answer=outcome.text, citations=citations_of(extra), index=extra["index"],
        version=extra["index_version"], model=result.model, backend=result.backend,
        usage=usage_dict(result.usage), prompt=extra["prompt"], steps=result.steps, grades=extra.get("grades"),
        finish_reason=result.choices[0].finish_reason if result.choices else None,
    )  # fmt: skip


# -- streams -------------------------------------------------------------------------------------


async def chat_sse(
    turn: Turn, stream: AsyncIterator[Delta | Outcome], grounding: dict[str, Any] | None = None
) -> AsyncIterator[dict]:
    """OpenAI chat chunks; the last one carries usage and the `rayrag` extras. A grounded answer's
    first chunk (no choices, as OpenAI's usage chunk) carries its citations, so a client shows them
    while the answer streams. An error after the headers were sent travels as an error event, as
    OpenAI's clients expect."""
    started: set[int] = set()
    if grounding is not None:
        yield {"data": json.dumps(chat_chunk(turn.rid, turn.model, 0, {}, None, rayrag=grounding) | {"choices": []})}
    try:
        async with aclosing(stream) as events:  # closed at once when the client goes away
            async for event in events:
                if isinstance(event, Outcome):
                    last = chat_chunk(turn.rid, turn.model, 0, {}, None, usage=usage_dict(event.result.usage),
                                      rayrag=_rayrag(event) | {"backend": event.result.backend})  # fmt: skip
                    yield {"data": json.dumps(last | {"choices": []})}
                    continue
                content = {} if event.finish_reason == "content_filter" else {"content": event.text}
                content |= {} if event.index in started else {"role": "assistant"}
                started.add(event.index)
                yield {"data": json.dumps(chat_chunk(turn.rid, turn.model, event.index, content, event.finish_reason))}
    except Exception as exc:  # noqa: BLE001 - headers are sent; the error travels as an event
        yield {"data": edge.sse_error(exc, turn.rid)}
    yield {"data": "[DONE]"}


async def completion_sse(turn: Turn, stream: AsyncIterator[Delta | Outcome]) -> AsyncIterator[dict]:
    try:
        async with aclosing(stream) as events:  # closed at once when the client goes away
            async for event in events:
                if not isinstance(event, Outcome):
                    chunk = completion_chunk(turn.rid, turn.model, event.index, event.text, event.finish_reason)
                    yield {"data": json.dumps(chunk)}
    except Exception as exc:  # noqa: BLE001 - headers are sent; the error travels as an event
        yield {"data": edge.sse_error(exc, turn.rid)}
    yield {"data": "[DONE]"}


class SocketGate:
    """Open chat sockets per key, in this gateway replica (idle sockets must not exhaust its
    `max_ongoing_requests`)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.open = cap, Counter()

    def enter(self, key_id: str) -> bool:
        if self.open[key_id] >= self.cap:
            return False
        self.open[key_id] += 1
        return True

    def leave(self, key_id: str) -> None:
        self.open[key_id] -= 1


async def chat_socket(flow: AnswerFlow, websocket: WebSocket, gate: SocketGate) -> None:
    """The chat websocket: Origin and key checked before the handshake is accepted (refused with
    1008), connections per key capped (1013), frames capped (1009), idle sockets closed (1000);
    then one chat turn per JSON frame."""
    limits = flow.config.websocket
    origin = websocket.headers.get("origin")
    if origin is not None and origin not in limits.allowed_origins:
        return await websocket.close(code=1008, reason="origin not allowed")
    try:
        who = flow.guard.auth.authenticate(websocket.headers.get("authorization"))
    except ServingError:
        return await websocket.close(code=1008, reason="missing or invalid API key")
    if not gate.enter(who.key_id):
        return await websocket.close(code=1013, reason="too many open sockets for this key")
    try:
        await websocket.accept()
        while True:
            try:
                raw = await asyncio.wait_for(websocket.receive_text(), limits.idle_timeout_s)
            except TimeoutError:
                return await websocket.close(code=1000, reason="idle")
            if len(raw.encode()) > limits.max_frame_bytes:
                return await websocket.close(code=1009, reason=f"frame over {limits.max_frame_bytes} bytes")
            await socket_turn(flow, websocket, raw)
    except WebSocketDisconnect:
        return
    finally:
        gate.leave(who.key_id)


async def socket_turn(flow: AnswerFlow, websocket: WebSocket, raw: str) -> None:
    """One websocket chat turn: `grounding` (a RAG turn's citations, first), `delta` events, then
    `done` (usage, `rayrag` extras) or `error`."""
    rid = edge.new_request_id()
    try:
        who = flow.admit(websocket.headers)
        turn = chat_turn(who, rid, None, ChatCompletionRequest.model_validate_json(raw))
        plan = await flow.plan(turn)
        if (grounding := flow.grounding(plan)) is not None:
            await websocket.send_json({"type": "grounding", "request_id": rid, "rayrag": grounding})
        async with aclosing(flow.stream(plan)) as events:
            async for event in events:
                if isinstance(event, Outcome):
                    done = {"usage": usage_dict(event.result.usage), "backend": event.result.backend,
                            "rayrag": _rayrag(event)}  # fmt: skip
                    await websocket.send_json({"type": "done", "request_id": rid, **done})
                else:
                    delta = event.model_dump(exclude_none=True, exclude={"tokens", "prompt_tokens", "steps"})
                    await websocket.send_json({"type": "delta", "request_id": rid, **delta})
    except ValidationError as exc:
        body = edge.error_body(str(exc.errors()[0]["msg"]), "invalid_request_error", "invalid_request", None, rid)
        await websocket.send_json({"type": "error", **body})
    except ServingError as exc:
        await websocket.send_json({"type": "error", **json.loads(edge.sse_error(exc, rid))})
