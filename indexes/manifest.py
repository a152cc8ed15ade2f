"""The manifest: what one index version contains and how it was made.

It is the contract between the index job and serving. The per-document content hashes and chunk
ids make re-runs incremental; the embedder and chunker specs decide when they cannot be.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from indexes.embedder import EmbedderSpec
from indexes.strict import StrictModel

MANIFEST_FILE = "manifest.json"


class DocumentEntry(StrictModel):
    """One indexed document: its bytes' hash and the chunks made from it."""

    content_hash: str
    chunk_ids: list[str]
    size: int = 0


class Manifest(StrictModel):
    """A version's description, written last so a version without one is incomplete."""

    name: str
    version: str
    parent: str | None = None
    created_at: datetime
    source: str
    embedder: EmbedderSpec
    # The chunker's settings are an opaque fingerprint here: indexes never interprets them.
    chunker: dict[str, Any]
    backend: dict[str, Any]
    documents: dict[str, DocumentEntry] = Field(default_factory=dict)

    @property
    def chunk_count(self) -> int:
        return sum(len(entry.chunk_ids) for entry in self.documents.values())

    def save(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        return cls.model_validate_json((directory / MANIFEST_FILE).read_text())


def content_hash(data: bytes) -> str:
    """Identify a document's bytes; equal hashes mean nothing to re-embed."""
    return hashlib.sha256(data).hexdigest()
