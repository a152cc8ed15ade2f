"""The chunk store: text and metadata of every chunk, keyed by the vector id.

SQLite because serving looks chunks up by id at query time and increments delete by id; one file
per version, copied forward by the next version (copy-on-write keeps old versions readable).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

STORE_FILE = "chunks.sqlite"
_COLUMNS = ("vid", "chunk_id", "source", "title", "section", "page", "start", "end", "text")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    title TEXT,
    section TEXT,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
"""


def chunk_id_for(source: str, position: int, text: str) -> str:
    """A stable id: the same text at the same place in the same document always gets the same id."""
    digest = hashlib.sha256(f"{source}\x00{position}\x00{text}".encode()).hexdigest()
    return digest[:16]


def vector_id(chunk_id: str) -> int:
    """The 63-bit integer id vector backends need (FAISS int64, Qdrant unsigned), derived from the chunk id."""
    return int(chunk_id, 16) & ((1 << 63) - 1)


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece of a document, with where it came from."""

    chunk_id: str
    source: str
    text: str
    start: int
    end: int
    title: str | None = None
    section: str | None = None
    page: int | None = None

    @property
    def vid(self) -> int:
        return vector_id(self.chunk_id)

    def payload(self) -> dict:
        """Metadata for backends that store it beside the vector (Qdrant), text excluded."""
        return {k: v for k, v in asdict(self).items() if k != "text"}


def indexed_text(text: str, title: str | None, section: str | None, contextual: bool) -> str:
    """What is embedded and BM25-indexed for a chunk: its text, after its place in the document when
    the index is contextual ("Sorting HOW TO > Key Functions"), so a chunk that never names its topic
    is still found by it. The stored text and the citations stay the chunk's own text."""
    if not contextual:
        return text
    path = list(dict.fromkeys(p.strip() for p in (title, section) if p and p.strip()))
    return f"{' > '.join(path)}\n\n{text}" if path else text


# A sentence ends at . ! ? or : before a capital, a backtick, a quote or a bracket; a blank line ends one too.
SENTENCE_BREAK = re.compile(r"(?<=[.!?:])\s+(?=[A-Z`\"(])|\n\n+")


def lead_text(text: str, title: str | None, section: str | None, chars: int) -> str:
    """A chunk's opening: its first sentences up to `chars` (at least one sentence), after the heading
    line it may start with. The index job embeds it beside the whole chunk and stores the mean of the
    two (`chunker.lead_chars`): a long chunk's one vector averages every topic it touches, while what
    a passage is about is usually said first, in words closer to how people ask."""
    body = text.strip()
    for heading in (title, section):
        first, _, rest = body.partition("\n")
        if heading and rest and first.strip() == heading.strip():
            body = rest.lstrip()
    lead = ""
    for sentence in (s.strip() for s in SENTENCE_BREAK.split(body)):
        if not sentence:
            continue
        if lead and len(lead) + 1 + len(sentence) > chars:
            break
        lead = f"{lead} {sentence}".strip()
    return lead


class ChunkStore:
    """Chunks of one index version in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # readers on several threads (the retriever searches off its event loop)

    @classmethod
    def open(cls, directory: Path) -> ChunkStore:
        return cls(directory / STORE_FILE)

    def add(self, chunks: Iterable[Chunk]) -> int:
        rows = [(c.vid, c.chunk_id, c.source, c.title, c.section, c.page, c.start, c.end, c.text) for c in chunks]
        with self._db:
            self._db.executemany(f"INSERT INTO chunks VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        return len(rows)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(c,) for c in chunk_ids])

    def get(self, vids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id; ids not in the store are absent from the result."""
        found: dict[int, Chunk] = {}
        for start in range(0, len(vids), 500):
            part = [int(v) for v in vids[start : start + 500]]
            query = f"SELECT * FROM chunks WHERE vid IN ({', '.join('?' * len(part))})"
            with self._lock:
                rows = self._db.execute(query, part).fetchall()
            for row in rows:
                found[row[0]] = _chunk_from_row(row)
        return found

    def by_id(self, chunk_id: str) -> Chunk | None:
        """The chunk with this id (its vector id first, then the id itself compared: the vector id keeps 63 bits)."""
        vid = vector_id(chunk_id)
        found = self.get([vid]).get(vid)
        return found if found is not None and found.chunk_id == chunk_id else None

    def document(self, source: str, limit: int) -> list[Chunk]:
        """The stored chunks of one source document in reading order, at most `limit` of them."""
        query = "SELECT * FROM chunks WHERE source = ? ORDER BY start LIMIT ?"
        with self._lock:
            return [_chunk_from_row(row) for row in self._db.execute(query, (source, limit))]

    def section_of(self, chunk: Chunk) -> Chunk:
        """`chunk` grown to its whole section ("small to big"): the stored chunks of its document and
        section merged by their offsets, overlaps kept once, a gap (a piece under min_chars, never
        stored) as a paragraph break. Its id stays the hit's, so the citation names what was found."""
        query = "SELECT * FROM chunks WHERE source = ? AND section IS ? ORDER BY start"
        with self._lock:
            parts = [_chunk_from_row(row) for row in self._db.execute(query, (chunk.source, chunk.section))]
        if not parts:
            return chunk
        text, end = merged(parts)
        return replace(chunk, text=text, start=parts[0].start, end=end)

    def __iter__(self) -> Iterator[Chunk]:
        """Every chunk, read under the lock in one go: the connection is shared by the retriever's
        threads (a BM25 build beside searches), and one is never used by two at once or after close."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM chunks ORDER BY source, start").fetchall()
        for row in rows:
            yield _chunk_from_row(row)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def close(self) -> None:
        with self._lock:  # waits for a reader on another thread; later reads raise, never crash
            self._db.close()


def merged(parts: Sequence[Chunk]) -> tuple[str, int]:
    """Chunks of one document, in order, as one text and its end offset: overlaps kept once, a gap
    (a piece under min_chars, never stored) as a paragraph break."""
    text, cursor = parts[0].text, parts[0].end
    for part in parts[1:]:
        if part.end <= cursor:
            continue
        text += part.text[cursor - part.start :] if part.start < cursor else "\n\n" + part.text
        cursor = part.end
    return text, cursor


def sections(parts: Sequence[Chunk]) -> list[Chunk]:
    """A document's chunks (in order) merged section by section: what a reader of the document sees."""
    grouped: list[list[Chunk]] = []
    for part in parts:
        if grouped and grouped[-1][0].section == part.section:
            grouped[-1].append(part)
        else:
            grouped.append([part])
    whole = []
    for group in grouped:
        text, end = merged(group)
        whole.append(replace(group[0], text=text, end=end))
    return whole


def _chunk_from_row(row: tuple) -> Chunk:
    _vid, chunk_id, source, title, section, page, start, end, text = row
    return Chunk(chunk_id, source, text, start, end, title, section, page)
