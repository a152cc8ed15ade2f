"""The Generator contract shared by every backend (vLLM, llama.cpp) and the router.

A request carries either chat `messages` (rendered with the model's own chat template by the
backend) or a raw `prompt`. `generate` returns whole choices with token usage; `stream` yields
`Delta`s, the last of which carries the usage. Backends raise `serving.errors` types only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator, model_validator


def check_unicode(value: Any) -> Any:
    """Refuse text that is not valid Unicode (a lone surrogate such as "\\ud800" parses from JSON but
    cannot be encoded, and would fail deep inside a store or an engine): a 400 at the edge instead."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (it holds a lone surrogate)") from None
    elif isinstance(value, list | tuple):
        for item in value:
            check_unicode(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key)
            check_unicode(item)
    return value


class ClientText(BaseModel):
    """Base of every model a client sends: each field's text must be valid Unicode."""

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return check_unicode(value)


class Message(ClientText):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ResponseFormat(BaseModel):
    """JSON mode: any JSON object, or one that validates against `schema` (OpenAI's `json_schema`)."""

    type: Literal["json_object", "json_schema"]
    schema_: dict | None = Field(default=None, alias="schema")

    model_config = {"populate_by_name": True}


class GenerationRequest(BaseModel):
    """What to generate; sampling fields mean what they mean in the OpenAI API.

    `context` holds the retrieved passages a RAG prompt was grounded on, so the chain's extractive
    last step can answer from them without the retriever.
    """

    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    n: int = Field(default=1, ge=1, le=8)
    seed: int | None = None
    response_format: ResponseFormat | None = None
    context: list[str] = Field(default_factory=list)
    request_id: str = "request"
    # the models the caller's key may use, when the router picks (RAG routes); None: any
    allowed_models: list[str] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> GenerationRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages or prompt")
        return self


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """Two generations' usage together (a retried or regenerated answer pays for both)."""
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: str | None


class GenerationResult(BaseModel):
    model: str
    backend: str
    choices: list[Choice]
    usage: Usage
    steps: list[str] = Field(default_factory=list)  # the fallback chain's path to this answer


class Delta(BaseModel):
    """A piece of one choice's text; `finish_reason` set on its last piece, `usage` on the stream's last."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    backend: str = ""
    usage: Usage | None = None
    steps: list[str] = Field(default_factory=list)  # on the last delta, like usage
    # what this piece cost, so a stream cut short (disconnect, content filter) is charged for what it produced
    tokens: int = 0  # completion tokens in this piece
    prompt_tokens: int | None = None  # on a stream's first piece


class GeneratorStatus(BaseModel):
    """What the router needs to choose: can it take work now, and how busy is it."""

    backend: str
    model: str
    ready: bool
    error: str | None = None
    running: int = 0
    cancelled: int = 0  # streams stopped by their consumer (disconnect, content filter) and aborted
    scaled_to_zero: bool = False  # no replica now (min_replicas 0): a later step answers while it starts


class Generator(Protocol):
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...

    async def status(self) -> GeneratorStatus: ...

    async def wait_ready(self, timeout_s: float) -> GeneratorStatus: ...
