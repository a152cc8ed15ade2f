"""The retrieval query of a turn in a conversation.

A follow-up is often elliptical ("and dictionaries?"): searched alone it finds nothing about what
the conversation is on. So retrieval reads the conversation:

- **The recent user turns**, the last one first, are always in the query. This is deterministic and
  free. The last turn leads because the embedder reads only about its first 256 tokens: what the
  user asks now must not be cut off by what they asked before. BM25 does not care about the order.
- **A rewrite by the chain's generator** goes in front of them (`rewrite: auto`, when the chain has
  a model the key may use): the last question as one standalone question, asked with two worked
  examples, within `timeout_s` and `max_tokens`. This is the approach of LangChain's history-aware
  retriever and of Haystack's query rewriting. The rewrite leads the user turns rather than
  replacing them: a small model's rewrite is often an answer or a copy, and the user's own words
  keep the query on topic. On the frozen multi-turn set (`rayrag eval conversations`), tried on its
  dev half, the packaged 135M model's rewrite alone lost to the user turns, and rewrite plus turns
  beat both. Anything but a usable one-line reply (an error, a timeout, an empty or overlong
  answer, a chain without such a model) leaves the user turns alone.

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
    "Rewrite the last question of a conversation so that it can be understood alone. "
    "Reply with the rewritten question only."
)
# worked examples: a 135M chat model answers the question instead of rewriting it without them
EXAMPLES = (
    ("User: How do I open a file?\nAssistant: Use the built-in open().\nUser: And close it?", "How do I close a file?"),
    ("User: What is a decorator?\nAssistant: A function that wraps another function.\nUser: Can a class be one?",
     "Can a class be a decorator?"),
)  # fmt: skip
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


def _examples() -> list[Message]:
    return [Message(role=role, content=text) for pair in EXAMPLES
            for role, text in zip(("user", "assistant"), pair, strict=True)]  # fmt: skip


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
                # at most half the query: the user's own turns keep the rest
                if (question := cleaned(result.choices[0].text if result.choices else "", self.config.max_chars // 2)):
                    turns = turns_query(messages, self.config.turns, self.config.max_chars - len(question) - 1)
                    return Followup(f"{question}\n{turns}" if turns else question, "model", spent, model)
                log.info("follow-up rewrite unusable; searching with the user turns")
        return Followup(turns_query(messages, self.config.turns, self.config.max_chars), "turns", spent, model)

    async def _rewrite(self, messages: list[Message], allowed_models: list[str] | None) -> GenerationResult | None:
        request = GenerationRequest(
            messages=[Message(role="system", content=REWRITE_INSTRUCTIONS), *_examples(),
                      Message(role="user", content=transcript(messages))],
            max_tokens=self.config.max_tokens, temperature=0.0, allowed_models=allowed_models,
        )  # fmt: skip
        try:
            return await asyncio.wait_for(self.generate(request), self.config.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure (timeout, no model, 4xx) falls back to the turns
            log.info("follow-up rewrite skipped (%s: %s); searching with the user turns", type(exc).__name__, exc)
            return None
