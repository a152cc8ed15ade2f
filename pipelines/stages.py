"""The Ray Data stages of the index job: callable classes, so models load once per actor.

`DocumentProcessor` reads, hashes, parses and chunks one file; `ChunkEmbedder` embeds a batch.

Parse and embed stream into each other (the embed actors, GPUs on a cluster, start on the first
parsed documents), so what the job must know of every document (status, hash, reason) rides in the
same stream: the parse stage emits one row per chunk and then one record row per document, the
record as JSON in `document_json` (flat columns only: every row has the same Arrow schema), which
the embedder passes through with a zero vector.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray

from core.offline import ensure_offline
from indexes.embedder import Embedder, EmbedderConfig, EmbedderSpec, load_embedder, resolve_model_path
from indexes.manifest import content_hash
from indexes.store import Chunk, indexed_text, lead_text
from pipelines.chunking import TokenOffsets, chunk_document
from pipelines.config import ChunkerConfig, EmbedStageConfig, ParseConfig
from pipelines.ingest import ParseError, parse_bytes, use_packaged_spacy_model

PARSED, UNCHANGED, SKIPPED = "parsed", "unchanged", "skipped"
CHUNK_COLUMNS = ("chunk_id", "vid", "source", "title", "section", "page", "start", "end", "text")
RECORD = "document_json"  # non-empty on a document's record row, empty on its chunks' rows
_NO_CHUNK = {"chunk_id": "", "vid": 0, "source": "", "title": "", "section": "", "page": -1, "start": 0, "end": 0,
             "text": ""}  # fmt: skip


class StreamProbe:
    """A test hook, like the job's checkpoints (RAYRAG_JOB_PROBE=<dir>, handed to the stages by
    the driver): the embed stage announces its first embedded chunk there, and the parse of the file
    named in `<dir>/hold-parse` waits for that announcement. In a stream it comes; were parsing
    finished before embedding began, it could not, and the parse gives up after HOLD_S and says so
    (`<dir>/parse-gave-up`): a test tells a stream from two passes by an event, not by a clock."""

    HOLD_S = 120.0

    def __init__(self, where: str | None) -> None:
        self.where = Path(where) if where else None

    def embedded(self) -> None:
        if self.where:
            (self.where / "embedded").touch()

    def before_parse(self, key: str) -> None:
        held = self.where / "hold-parse" if self.where else None
        if held is None or not held.exists() or held.read_text().strip() != key:
            return
        pause = threading.Event()  # never set: a bounded wait between looks
        for _ in range(int(self.HOLD_S * 10)):
            if (self.where / "embedded").exists():
                return
            pause.wait(0.1)
        (self.where / "parse-gave-up").touch()


def _token_offsets(embedder: EmbedderConfig) -> TokenOffsets:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(embedder.model)))

    def offsets(text: str) -> list[tuple[int, int]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in encoded["offset_mapping"]]

    return offsets


class DocumentProcessor:
    """flat_map: one listed file -> its chunk rows, then its record row (status, hash, reasons)."""

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        parse: ParseConfig,
        chunker: ChunkerConfig,
        embedder: EmbedderConfig,
        known_hashes: dict[str, str] | ray.ObjectRef,
        probe: str | None = None,
    ) -> None:
        ensure_offline()
        use_packaged_spacy_model()
        self.filesystem = filesystem
        self.parse = parse
        self.chunker = chunker
        # a large index's map travels once, as an object reference, not pickled into every actor
        self.known_hashes = ray.get(known_hashes) if isinstance(known_hashes, ray.ObjectRef) else known_hashes
        self.token_offsets = _token_offsets(embedder) if chunker.unit == "tokens" else None
        self.probe = StreamProbe(probe)

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        record, chunks = self.process(row)
        rows = [_chunk_row(chunk) | {RECORD: "", "chunks": 0} for chunk in chunks]
        return [*rows, _NO_CHUNK | {RECORD: json.dumps(record), "chunks": len(rows)}]

    def process(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[Chunk]]:
        """The file's record {key, size, status, reason, warning, content_hash} and its chunks."""
        record = {"key": row["key"], "size": row["size"], "content_hash": "", "reason": "", "warning": ""}
        try:
            with self.filesystem.open_input_file(row["path"]) as handle:
                data = handle.read()
        except OSError as exc:
            return record | {"status": SKIPPED, "reason": f"cannot read: {exc}"}, []
        record["content_hash"] = digest = content_hash(data)
        if self.known_hashes.get(row["key"]) == digest:
            return record | {"status": UNCHANGED}, []
        self.probe.before_parse(row["key"])
        try:
            document = parse_bytes(data, row["key"], self.parse)
        except ParseError as exc:
            return record | {"status": SKIPPED, "reason": str(exc)}, []
        chunks = chunk_document(row["key"], document.elements, self.chunker, document.title, self.token_offsets)
        return record | {"status": PARSED, "warning": "; ".join(document.warnings)}, chunks


def document_record(row: dict[str, Any]) -> dict[str, Any]:
    """The document's status, hash, size and reasons, from its record row."""
    return json.loads(row[RECORD]) | {"chunks": int(row["chunks"])}


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
    """Embeds the `text` column of chunk rows into a `vector` column (record rows get zeros); one
    model per actor (per GPU on a GPU cluster).

    The model loads in a background thread from the actor's start, while the parse actors start
    and parse, and the first chunk waits for it; a re-run over an unchanged corpus streams only
    records and never waits for the model.
    """

    REQUIRED = frozenset((*CHUNK_COLUMNS, RECORD))

    def __init__(
        self,
        embedder: EmbedderConfig,
        stage: EmbedStageConfig,
        spec: EmbedderSpec,
        chunker: ChunkerConfig,
        probe: str | None = None,
    ) -> None:
        ensure_offline()
        self.batch_size, self.dim, self.probe = stage.batch_size, spec.dim, StreamProbe(probe)
        self.chunker = chunker  # what of a chunk is embedded: its place (contextual) and its lead
        self._loading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-embedder")
        threads = stage.torch_threads or os.cpu_count() or 1
        self._embedder = self._loading.submit(_load_for_actor, embedder, threads, spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self.REQUIRED - set(batch)
        if missing:
            raise KeyError(f"embed stage got a batch without columns {sorted(missing)}")
        vectors = np.zeros((len(batch["text"]), self.dim), dtype=np.float32)
        chunks = np.flatnonzero(batch[RECORD] == "")
        if len(chunks):
            places = [(str(batch["text"][i]), _text(batch["title"][i]), _text(batch["section"][i])) for i in chunks]
            vectors[chunks] = chunk_vectors(self._embedder.result(), places, self.chunker, self.batch_size)
            self.probe.embedded()
        batch["vector"] = vectors
        return batch


def embedded_texts(
    places: Sequence[tuple[str, str | None, str | None]], chunker: ChunkerConfig
) -> tuple[list[str], dict[int, str]]:
    """What the index job embeds for chunks given as (text, title, section): each chunk's indexed text,
    and by position the leads embedded beside it (`lead_text`; none that is the whole text again)."""
    contextual = chunker.contextual
    texts = [indexed_text(text, title, section, contextual) for text, title, section in places]
    leads: dict[int, str] = {}
    for position, (text, title, section) in enumerate(places if chunker.lead_chars else ()):
        lead = lead_text(text, title, section, chunker.lead_chars)
        if lead and (lead := indexed_text(lead, title, section, contextual)) != texts[position]:
            leads[position] = lead
    return texts, leads


def chunk_vectors(
    embedder: Embedder, places: Sequence[tuple[str, str | None, str | None]], chunker: ChunkerConfig,
    batch_size: int = 64,
) -> np.ndarray:  # fmt: skip
    """What the index stores for chunks: the embedding of each chunk's indexed text, or with
    `chunker.lead_chars` the normalised mean of it and its lead's. Queries are embedded as before: the mean's
    cosine to a query rises with either view's, so serving needs no change. The one definition of a
    chunk's vector: the embed actors and the tests that check stored vectors both call it.

    With `lead_pooling: context` a lead's vector is pooled from its chunk's own forward pass (its
    tokens as read in the whole chunk), so the leads cost no model call: on the default corpus they
    were 27 % of the tokens the job embedded. It is not the default: read in context, a lead kept less
    of what leads add on python-faq's dev half. A lead the model does not find in its chunk (cut off at
    max_seq_length) is embedded alone, as with `separate`."""
    texts, leads = embedded_texts(places, chunker)
    if leads and chunker.lead_pooling == "context":
        vectors, pooled = embedder.encode_with_parts(texts, leads, batch_size)
        alone = [position for position in leads if position not in pooled]
        for position, row in zip(alone, embedder.encode([leads[p] for p in alone], batch_size), strict=True):
            pooled[position] = row
        return _with_leads(vectors, pooled)
    # One encode for chunks and leads: sorted by length together, the model calls pad less (and the
    # last, part-full call of each sort happens once, not twice).
    embedded = embedder.encode([*texts, *leads.values()], batch_size)
    return _with_leads(embedded[: len(texts)], dict(zip(leads, embedded[len(texts) :], strict=True)))


def _with_leads(vectors: np.ndarray, leads: dict[int, np.ndarray]) -> np.ndarray:
    """Each chunk's vector, or where it has a lead the normalised mean of the two."""
    if leads:
        wanted = list(leads)
        mean = vectors[wanted] + np.stack([leads[position] for position in wanted])
        vectors[wanted] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return vectors


def _text(value: Any) -> str | None:
    """A title or section cell of a chunk row ("" or None where the chunk has none)."""
    return str(value) if value else None


def _load_for_actor(embedder: EmbedderConfig, threads: int, spec: EmbedderSpec) -> Embedder:
    """The model, checked against the spec the driver recorded (read from the model's files), for
    bulk work: an actor's block is many model calls, run side by side (`load_embedder`, which sets
    torch's threads too where torch computes)."""
    loaded = load_embedder(embedder, threads, bulk=True)
    loaded.check_spec(spec)
    return loaded
