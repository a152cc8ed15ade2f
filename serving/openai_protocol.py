"""OpenAI-compatible request models and response builders (one module, like vLLM's protocol.py).

Unknown request fields are ignored rather than refused: OpenAI clients and frameworks send
parameters this server does not implement (e.g. `presence_penalty`), and refusing them would
break those clients for no gain. Fields it does implement are validated strictly.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import jsonschema
import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from serving.generator.protocol import ClientText, GenerationResult, Message, ResponseFormat, Usage

RAG_PREFIX = "rag:"


class _Lenient(ClientText):
    model_config = ConfigDict(extra="ignore")


class JsonSchemaSpec(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class OpenAIResponseFormat(_Lenient):
    """OpenAI's `response_format`: `text` (the default), `json_object`, or `json_schema`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> OpenAIResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or not self.json_schema.schema_):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        if self.type == "json_schema":
            try:  # a schema that is not a JSON Schema is the client's error, found before any generation
                jsonschema.validators.validator_for(self.json_schema.schema_).check_schema(self.json_schema.schema_)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema.schema is not a valid JSON Schema: {exc.message}") from None
        return self

    def for_generation(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.type == "json_schema" and self.json_schema else None
        return ResponseFormat(type=self.type, schema=schema)


class SamplingFields(_Lenient):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=8)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    user: str | None = None
    prompt_template: str | None = None  # rayrag: versioned RAG prompt (`name` or `name@version`)
    response_format: OpenAIResponseFormat | None = None

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    session_id: str | None = Field(default=None, min_length=1, max_length=128)  # rayrag: conversation history


class CompletionRequest(SamplingFields):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per request")
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class _TextsInput(_Lenient):
    input: str | list[str] = Field(min_length=1)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingRequest(_TextsInput):
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


class ModerationRequest(_TextsInput):
    model: str | None = None


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _envelope(
    object_: str, request_id: str, model: str, result: GenerationResult, choices: list[dict], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": object_,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": f"rayrag-{result.backend}",
        "choices": choices,
        "usage": usage_dict(result.usage),
        "rayrag": {"backend": result.backend, "generator_model": result.model, **extra},
    }


def chat_response(request_id: str, model: str, result: GenerationResult, extra: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {"index": c.index, "message": {"role": "assistant", "content": c.text},
         "finish_reason": c.finish_reason or "stop", "logprobs": None}
        for c in result.choices
    ]  # fmt: skip
    return _envelope("chat.completion", request_id, model, result, choices, extra)


def completion_response(request_id: str, model: str, result: GenerationResult, extra: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {"index": c.index, "text": c.text, "finish_reason": c.finish_reason or "stop", "logprobs": None}
        for c in result.choices
    ]
    return _envelope("text_completion", request_id, model, result, choices, extra)


def chat_chunk(
    request_id: str, model: str, index: int, delta: dict[str, Any], finish: str | None, **extra: Any
) -> dict:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }


def completion_chunk(request_id: str, model: str, index: int, text: str, finish: str | None, **extra: Any) -> dict:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}],
        **extra,
    }


def embedding_response(model: str, vectors: list[list[float]], tokens: int, encoding: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def model_card(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "rayrag", **extra}
