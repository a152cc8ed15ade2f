"""The gateway's streaming side: SSE chunks for chat and completions, and websocket chat turns.

Output guardrails apply token by token (a stream stops at the first violation), usage is charged
and the answer recorded when the last delta arrives, and errors after the headers were sent travel
as an error event. A mixin of `GatewayCore`, whose collaborators it uses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import WebSocket
from pydantic import ValidationError

from serving import edge
from serving.errors import ServingError, unwrap
from serving.generator.protocol import GenerationRequest, GenerationResult, Message
from serving.middleware.keys import Principal
from serving.openai_protocol import ChatCompletionRequest, chat_chunk, completion_chunk, usage_dict
from serving.protocol import SearchRequest
from serving.rag import question_of


class GatewayStreams:
    async def _socket_turn(self, websocket: WebSocket, raw: str) -> None:
        rid = edge.new_request_id()
        try:
            who = self.guard.admit(websocket.headers)
            body = ChatCompletionRequest.model_validate_json(raw)
            asked = self.guard.screen_messages(body.messages)
            messages = self.conversations.with_history(who.tenant, body.session_id, asked)
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
                    self._account(who, delta.usage, body.model, generation)
                    self.conversations.save_turn(who.tenant, body.session_id, asked, text)
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
                    self._account(who, delta.usage, model, generation)
                    streamed = GenerationResult(
                        model=model, backend=delta.backend, choices=[], usage=delta.usage, steps=delta.steps
                    )
                    self._remember(rid, who, "chat", streamed, extra, body.session_id)
                    self.conversations.save_turn(who.tenant, body.session_id, asked, texts.get(0, ""))
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
                    self._account(who, delta.usage, model, generation)
                else:
                    yield {
                        "data": json.dumps(completion_chunk(rid, model, delta.index, delta.text, delta.finish_reason))
                    }
        except Exception as exc:  # noqa: BLE001 - headers are sent; the error travels as an event
            yield {"data": edge.sse_error(unwrap(exc), rid)}
        yield {"data": "[DONE]"}
