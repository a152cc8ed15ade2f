"""Request and response models of retrieval (/v1/search, /v1/query), shared by gateway and retriever."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from indexes.reader import Hit
from indexes.store import Chunk
from serving.generator.protocol import ClientText

Mode = Literal["dense", "hybrid", "mmr", "bm25"]
CHUNK_ID = r"^[0-9a-f]{16}$"  # indexes.store.chunk_id_for


class SearchRequest(ClientText):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    index: str = "pydocs"
    top_k: int | None = Field(default=None, ge=1)
    mode: Mode | None = None
    source: str | None = Field(default=None, description="exact source path or a glob, e.g. '*/library/csv.html'")
    section: str | None = Field(default=None, description="case-insensitive substring of the section title")
    rerank: bool | None = Field(default=None, description="null: rerank when a reranker is configured")


class Passage(BaseModel):
    """A stored chunk, or a stretch of a document merged from its chunks, and where it came from."""

    chunk_id: str
    source: str
    title: str | None
    section: str | None
    page: int | None
    start: int
    end: int
    text: str

    @classmethod
    def of(cls, c: Chunk) -> Passage:
        return cls(chunk_id=c.chunk_id, source=c.source, title=c.title, section=c.section, page=c.page,
                   start=c.start, end=c.end, text=c.text)  # fmt: skip


class ScoredChunk(Passage):
    score: float

    @classmethod
    def from_hit(cls, hit: Hit) -> ScoredChunk:
        return cls(**Passage.of(hit.chunk).model_dump(), score=hit.score)


class PassageResult(BaseModel):
    """One chunk of a served index, whole (a citation's passage, opened)."""

    index: str
    version: str
    passage: Passage


class DocumentResult(BaseModel):
    """A source document as the served index holds it: its chunks merged, section by section."""

    index: str
    version: str
    source: str
    title: str | None
    sections: list[Passage]
    truncated: bool = Field(description="the document has more chunks than the gateway hands out at once")


class SearchResult(BaseModel):
    index: str
    version: str
    mode: Mode
    reranked: bool
    took_ms: float
    chunks: list[ScoredChunk]


class Citation(BaseModel):
    """Where a numbered context passage [n] of an answer came from."""

    n: int
    chunk_id: str
    source: str
    title: str | None
    section: str | None
    page: int | None
    score: float
    snippet: str


class QueryRequest(SearchRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    model: str | None = Field(default=None, description="generator; null: the router's choice")
    prompt_template: str | None = Field(default=None, description="`name` or `name@version`; null: the default")


class QueryResponse(BaseModel):
    id: str
    answer: str
    citations: list[Citation]
    index: str
    version: str
    model: str
    backend: str
    usage: dict[str, int]
    prompt: str
    steps: list[str] = Field(default_factory=list)  # the fallback chain's path to the answer
    grades: dict[str, Any] | None = None  # grader verdicts when the graders are on
    finish_reason: str | None = None  # `content_filter` when the answer was withheld by the output screen


class GradeRequest(ClientText):
    """An answer to grade: against `passages`, or against what `index` retrieves for the question."""

    question: str = Field(min_length=1, max_length=8000)
    answer: str = Field(max_length=16000)
    passages: list[str] | None = None
    index: str = "pydocs"
