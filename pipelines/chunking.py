"""Clean and chunk parsed documents. Pure functions: same elements and settings, same chunks.

A document's cleaned elements are joined into one text (blank line between elements) and every
chunk records its character offsets in that text. `by_title` starts a section at each heading
and windows inside it; `window` windows the whole text. Windows are measured in characters
(snapped to whitespace) or in tokens of the embedder's own tokenizer, with overlap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from indexes.store import Chunk, chunk_id_for
from pipelines.config import ChunkerConfig

Span = tuple[int, int]
TokenOffsets = Callable[[str], list[Span]]
TITLE_CATEGORIES = frozenset({"Title"})
DROPPED_CATEGORIES = frozenset({"PageBreak", "PageNumber", "Image"})
SEPARATOR = "\n\n"
_SPACES = re.compile(r"[ \t\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
# Sphinx and similar generators append a permalink sign to every heading.
_PERMALINK = re.compile(r"[¶\uf0c1]")


@dataclass(frozen=True)
class Element:
    """A parsed piece of a document: its text, unstructured's category and its page."""

    text: str
    category: str
    page: int | None = None


@dataclass(frozen=True)
class Block:
    """An element placed in the document text."""

    start: int
    end: int
    page: int | None
    is_title: bool
    text: str


@dataclass(frozen=True)
class Section:
    title: str | None
    start: int
    end: int


def clean_text(text: str) -> str:
    """Collapse runs of spaces and blank lines but keep line breaks (code stays readable)."""
    text = _PERMALINK.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n", text)
    return "\n".join(line.strip() for line in text.splitlines()).strip()


def layout(elements: Sequence[Element]) -> tuple[str, list[Block]]:
    """Join the cleaned elements into one text and remember where each one sits."""
    parts: list[str] = []
    blocks: list[Block] = []
    position = 0
    for element in elements:
        text = clean_text(element.text)
        if not text or element.category in DROPPED_CATEGORIES:
            continue
        if parts:
            position += len(SEPARATOR)
        blocks.append(Block(position, position + len(text), element.page, element.category in TITLE_CATEGORIES, text))
        parts.append(text)
        position += len(text)
    return SEPARATOR.join(parts), blocks


def sections(blocks: Sequence[Block], strategy: str) -> list[Section]:
    """Split at headings (`by_title`) or keep the whole text as one section (`window`)."""
    if not blocks:
        return []
    end = blocks[-1].end
    if strategy == "window":
        return [Section(None, 0, end)]
    found: list[Section] = []
    title, start = None, 0
    for block in blocks:
        if block.is_title and block.start > start:
            found.append(Section(title, start, block.start - len(SEPARATOR)))
            start = block.start
        if block.is_title:
            title = block.text
    found.append(Section(title, start, end))
    return found


def char_windows(text: str, start: int, end: int, size: int, overlap: int) -> list[Span]:
    """Windows of at most `size` characters over text[start:end], cut at whitespace where possible."""
    spans: list[Span] = []
    position = start
    while position < end:
        stop = min(position + size, end)
        if stop < end:
            stop = _last_break(text, position + size // 2, stop) or stop
        spans.append(_trim(text, position, stop))
        if stop >= end:
            break
        position = _word_start(text, max(stop - overlap, position + 1), stop)
    return [span for span in spans if span[1] > span[0]]


def token_windows(offsets: Sequence[Span], size: int, overlap: int) -> list[Span]:
    """Windows of at most `size` tokens, given each token's character span."""
    spans: list[Span] = []
    step = size - overlap
    for first in range(0, len(offsets), step):
        last = min(first + size, len(offsets)) - 1
        spans.append((offsets[first][0], offsets[last][1]))
        if last == len(offsets) - 1:
            break
    return spans


def chunk_document(
    source: str,
    elements: Sequence[Element],
    config: ChunkerConfig,
    title: str | None = None,
    token_offsets: TokenOffsets | None = None,
) -> list[Chunk]:
    """All chunks of one document, in reading order, each with its id, offsets, section and page."""
    text, blocks = layout(elements)
    title = title or next((b.text for b in blocks if b.is_title), None) or PurePosixPath(source).stem
    chunks: list[Chunk] = []
    for section in sections(blocks, config.strategy):
        for start, end in _windows(text, section, config, token_offsets):
            piece = text[start:end]
            if len(piece) >= config.min_chars:
                chunk_id = chunk_id_for(source, start, piece)
                chunks.append(Chunk(chunk_id, source, piece, start, end, title, section.title, _page_at(blocks, start)))
    return chunks


def _windows(text: str, section: Section, config: ChunkerConfig, token_offsets: TokenOffsets | None) -> list[Span]:
    if config.unit == "chars":
        return char_windows(text, section.start, section.end, config.size, config.overlap)
    if token_offsets is None:
        raise ValueError("chunker.unit 'tokens' needs the embedder's tokenizer")
    local = token_offsets(text[section.start : section.end])
    shifted = [(section.start + s, section.start + e) for s, e in local if e > s]
    return token_windows(shifted, config.size, config.overlap) if shifted else []


def _last_break(text: str, low: int, high: int) -> int | None:
    """The latest paragraph, line or word break in text[low:high], preferring the larger break."""
    for mark in (SEPARATOR, "\n", ". ", " "):
        found = text.rfind(mark, low, high)
        if found > low:
            return found + (1 if mark == ". " else 0)
    return None


def _word_start(text: str, position: int, limit: int) -> int:
    """Move forward to the start of the next word so an overlapping window does not begin mid-word."""
    if position == 0 or text[position - 1].isspace():
        return position
    while position < limit and not text[position].isspace():
        position += 1
    return min(position + 1, limit) if position < limit else position


def _trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _page_at(blocks: Sequence[Block], position: int) -> int | None:
    page = None
    for block in blocks:
        if block.start > position:
            break
        page = block.page
    return page
