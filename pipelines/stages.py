"""The Ray Data stages of the index job: callable classes, so models load once per actor.

`DocumentProcessor` reads, hashes, parses and chunks one file; `ChunkEmbedder` embeds a batch.
A document's chunks travel as one JSON string column: Arrow cannot unify a nested column whose
blocks are all empty lists (unchanged or skipped documents) with blocks that have chunks.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from indexes.embedder import EmbedderConfig, load_embedder, resolve_model_path
from indexes.manifest import content_hash
from indexes.offline import ensure_offline
from indexes.store import Chunk
from pipelines.chunking import TokenOffsets, chunk_document
from pipelines.config import ChunkerConfig, EmbedStageConfig, ParseConfig
from pipelines.ingest import ParseError, parse_bytes, use_packaged_spacy_model

PARSED, UNCHANGED, SKIPPED = "parsed", "unchanged", "skipped"
CHUNK_COLUMNS = ("chunk_id", "vid", "source", "title", "section", "page", "start", "end", "text")


def _token_offsets(embedder: EmbedderConfig) -> TokenOffsets:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(embedder.model)))

    def offsets(text: str) -> list[tuple[int, int]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in encoded["offset_mapping"]]

    return offsets


class DocumentProcessor:
    """One listed file -> {status, reason, warning, content_hash, chunks_json}."""

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        parse: ParseConfig,
        chunker: ChunkerConfig,
        embedder: EmbedderConfig,
        known_hashes: dict[str, str],
    ) -> None:
        ensure_offline()
        use_packaged_spacy_model()
        self.filesystem = filesystem
        self.parse = parse
        self.chunker = chunker
        self.known_hashes = known_hashes
        self.token_offsets = _token_offsets(embedder) if chunker.unit == "tokens" else None

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        result = {"key": row["key"], "size": row["size"], "content_hash": "", "reason": "", "warning": ""}
        try:
            with self.filesystem.open_input_file(row["path"]) as handle:
                data = handle.read()
        except OSError as exc:
            return result | {"status": SKIPPED, "reason": f"cannot read: {exc}", "chunks_json": "[]"}
        result["content_hash"] = digest = content_hash(data)
        if self.known_hashes.get(row["key"]) == digest:
            return result | {"status": UNCHANGED, "chunks_json": "[]"}
        try:
            document = parse_bytes(data, row["key"], self.parse)
        except ParseError as exc:
            return result | {"status": SKIPPED, "reason": str(exc), "chunks_json": "[]"}
        chunks = chunk_document(row["key"], document.elements, self.chunker, document.title, self.token_offsets)
        return result | {
            "status": PARSED,
            "warning": "; ".join(document.warnings),
            "chunks_json": json.dumps([_chunk_row(c) for c in chunks]),
        }


def explode_chunks(row: dict[str, Any]) -> list[dict[str, Any]]:
    """flat_map: a document row -> its chunk rows."""
    return json.loads(row["chunks_json"])


def _chunk_row(chunk: Chunk) -> dict[str, Any]:
    row = asdict(chunk) | {"vid": chunk.vid}
    row["page"] = -1 if chunk.page is None else chunk.page  # no nulls: keeps Arrow types stable
    row["title"] = chunk.title or ""
    row["section"] = chunk.section or ""
    return row


def chunk_from_row(row: dict[str, Any]) -> Chunk:
    page = int(row["page"])
    return Chunk(
        str(row["chunk_id"]), str(row["source"]), str(row["text"]), int(row["start"]), int(row["end"]),
        str(row["title"]) or None, str(row["section"]) or None, None if page < 0 else page,
    )  # fmt: skip


class ChunkEmbedder:
    """Embeds the `text` column into a `vector` column; one model per actor (per GPU on a GPU cluster)."""

    REQUIRED = frozenset(CHUNK_COLUMNS)

    def __init__(self, embedder: EmbedderConfig, stage: EmbedStageConfig) -> None:
        ensure_offline()
        import torch

        threads = stage.torch_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.batch_size = stage.batch_size
        self.embedder = load_embedder(embedder, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self.REQUIRED - set(batch)
        if missing:
            raise KeyError(f"embed stage got a batch without columns {sorted(missing)}")
        batch["vector"] = self.embedder.encode([str(t) for t in batch["text"]], self.batch_size)
        return batch
