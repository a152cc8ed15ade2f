"""The retrieval query of a turn in a conversation.

A follow-up is often elliptical ("and dictionaries?"): searched alone it finds nothing about what
the conversation is on. So retrieval reads the conversation, in one of two ways:

1. **A rewrite by the chain's generator** (`rewrite: auto`, when the chain has a model the key may
   use). The model is asked for the last question as one standalone question, within `timeout_s`
   and `max_tokens`. This is the approach of LangChain's history-aware retriever and of Haystack's
   query rewriting.
2. **The recent user turns**, the last one first. This is deterministic and free. It is the
   fallback for anything but a usable one-line question: an error, a timeout, an empty or overlong
   answer, or a chain without such a model. The last turn leads because the embedder reads only
   about its first 256 tokens: what the user asks now must not be cut off by what they asked
   before. BM25 does not care about the order.

A first turn (one user message) is searched as it is: nothing is rewritten and nothing is spent.
What a rewrite costs is charged to the request's key with its answer (`Followup.usage`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from serving.config import FollowupConfig
from serving.generator.protocol import GenerationRequest, GenerationResult, Message, Usage
from serving.rag import question_of

log = logging.getLogger(__name__)

Generate = Callable[[GenerationRequest], Awaitable[GenerationResult]]

REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last question as one standalone question that can be understood without "
    "the conversation: name the subject that the question refers to. Do not answer it. Reply with "
    "the rewritten question only, on one line."
)
TRANSCRIPT_MESSAGES = 6  # the recent messages a rewrite reads, each cut to TRANSCRIPT_CHARS
TRANSCRIPT_CHARS = 400
_LABEL = re.compile(r"^\s*(standalone question|rewritten question|question|rewrite)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Followup:
    """The query a turn is searched with, how it was made, and what making it cost."""

    query: str
    by: Literal["message", "turns", "model"]
    usage: Usage = field(default_factory=Usage)
    model: str | None = None  # the model that rewrote it


def user_turns(messages: list[Message]) -> list[str]:
    return [m.content for m in messages if m.role == "user" and m.content.strip()]


def turns_query(messages: list[Message], turns: int, max_chars: int) -> str:
    """The last `turns` user turns, the last one first, within `max_chars` (the last turn is kept
    whole when it fits alone; earlier ones are cut first)."""
    recent = user_turns(messages)[-turns:]
    if not recent:
        return question_of(messages)  # raises the request's own error: no user message
    parts, used = [], 0
    for text in reversed(recent):
        room = max_chars - used - (1 if parts else 0)
        if room <= 0:
            break
        parts.append(text[:room].strip())
        used += len(parts[-1]) + (1 if len(parts) > 1 else 0)
    return "\n".join(p for p in parts if p)


def transcript(messages: list[Message]) -> str:
    """The recent conversation as the rewriter reads it: bounded, whatever the client sent."""
    recent = [m for m in messages if m.role in ("user", "assistant") and m.content.strip()]
    lines = [f"{m.role.capitalize()}: {_one_line(m.content)[:TRANSCRIPT_CHARS]}" for m in recent[-TRANSCRIPT_MESSAGES:]]
    return "\n".join(lines)


def cleaned(text: str, max_chars: int) -> str | None:
    """The rewritten question from a model's reply, or None when the reply is not one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    question = _LABEL.sub("", lines[0]).strip().strip("\"'“”` ").strip()
    return question if 3 <= len(question) <= max_chars else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class FollowupQueries:
    """Builds the retrieval query of a turn (see the module's docstring)."""

    def __init__(self, config: FollowupConfig, generate: Generate | None) -> None:
        self.config = config
        self.generate = generate  # the chain's router; None: never rewrite by a model

    async def query(self, messages: list[Message], allowed_models: list[str] | None = None) -> Followup:
        last = question_of(messages)
        if self.config.rewrite == "off" or len(user_turns(messages)) < 2:
            return Followup(last, "message")
        spent, model = Usage(), None
        if self.config.rewrite == "auto" and self.generate is not None:
            result = await self._rewrite(messages, allowed_models)
            if result is not None:
                # an unusable reply was generated all the same: its tokens are charged either way
                spent, model = result.usage, result.model
                if (question := cleaned(result.choices[0].text if result.choices else "", self.config.max_chars)):
                    return Followup(question, "model", spent, model)
                log.info("follow-up rewrite unusable; searching with the user turns")
        return Followup(turns_query(messages, self.config.turns, self.config.max_chars), "turns", spent, model)

    async def _rewrite(self, messages: list[Message], allowed_models: list[str] | None) -> GenerationResult | None:
        request = GenerationRequest(
            messages=[Message(role="system", content=REWRITE_INSTRUCTIONS), Message(role="user", content=transcript(messages))],
            max_tokens=self.config.max_tokens, temperature=0.0, allowed_models=allowed_models,
        )  # fmt: skip
        try:
            return await asyncio.wait_for(self.generate(request), self.config.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure (timeout, no model, 4xx) falls back to the turns
            log.info("follow-up rewrite skipped (%s: %s); searching with the user turns", type(exc).__name__, exc)
            return None
