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

from core.strict import StrictModel
from indexes.embedder import EmbedderSpec

MANIFEST_FILE = "manifest.json"


class DocumentEntry(StrictModel):
    """One indexed document: its bytes' hash and the chunks made from it."""

    content_hash: str
    chunk_ids: list[str]
    size: int = 0


class FileEntry(StrictModel):
    """One file of a version, as the index job wrote it."""

    size: int
    sha256: str


class Manifest(StrictModel):
    """A version's description, written last so a version without one is incomplete. `files` lists
    every other file of the version with its size and SHA-256, so a reader can refuse a version that
    was changed after the job wrote it (`verify_files`)."""

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
    files: dict[str, FileEntry] = Field(default_factory=dict)  # path relative to the version directory

    @property
    def chunk_count(self) -> int:
        return sum(len(entry.chunk_ids) for entry in self.documents.values())

    def save(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        return cls.model_validate_json((directory / MANIFEST_FILE).read_text())


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Size and SHA-256 of every file under a finished version directory (the manifest excepted)."""
    return {
        path.relative_to(directory).as_posix(): FileEntry(size=path.stat().st_size, sha256=_sha256(path))
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name not in (MANIFEST_FILE, ".lock")  # .lock: embedded Qdrant's runtime lock
    }


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raise `ValueError` naming the first file that is missing or differs from what the job wrote.
    A manifest without a file list (written before versions carried one) cannot be verified."""
    for relative, expected in manifest.files.items():
        path = directory / relative
        if not path.is_file():
            raise ValueError(f"{relative} is missing")
        if path.stat().st_size != expected.size or _sha256(path) != expected.sha256:
            raise ValueError(f"{relative} differs from what the index job wrote (size or SHA-256)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(data: bytes) -> str:
    """Identify a document's bytes; equal hashes mean nothing to re-embed."""
    return hashlib.sha256(data).hexdigest()
