"""Turning retrieved chunks into a grounded prompt and citations; pure functions, no I/O."""

from __future__ import annotations

from serving.errors import InvalidRequest
from serving.generator.protocol import Message
from serving.protocol import Citation, ScoredChunk


def question_of(messages: list[Message]) -> str:
    """The standalone question: the last user turn."""
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content
    raise InvalidRequest("a RAG request needs a non-empty user message", param="messages")


def fit_context(chunks: list[ScoredChunk], max_chars: int) -> list[ScoredChunk]:
    """Keep chunks in rank order while their text fits the budget (always at least one, truncated)."""
    kept, used = [], 0
    for chunk in chunks:
        if kept and used + len(chunk.text) > max_chars:
            break
        kept.append(
            chunk if used + len(chunk.text) <= max_chars else chunk.model_copy(update={"text": chunk.text[:max_chars]})
        )
        used += len(kept[-1].text)
    return kept


def grounded_messages(system: str, messages: list[Message]) -> list[Message]:
    """The rendered system prompt (instructions + passages), then the conversation without the
    client's own system turns: in a RAG request the instructions are the platform's."""
    return [Message(role="system", content=system), *(m for m in messages if m.role != "system")]


CITED_FIELDS = {"chunk_id", "source", "title", "section", "page", "score"}


def citations(chunks: list[ScoredChunk], snippet_chars: int) -> list[Citation]:
    return [
        Citation(n=n, snippet=c.text[:snippet_chars], **c.model_dump(include=CITED_FIELDS))
        for n, c in enumerate(chunks, start=1)
    ]


def citations_of(extra: dict) -> list[Citation]:
    """The citations a flow outcome carries (as dicts, the way they are cached and recorded)."""
    return [Citation.model_validate(c) for c in extra.get("citations", [])]
