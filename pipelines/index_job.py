"""The index job: list -> read/parse/chunk (actor pool) -> embed (actor pool) -> write a version.

Runs on whatever Ray the caller connected to (a local instance, or a cluster under
`ray job submit`). Holds the index's writer lock for the whole run, writes the new version into a
`.partial` directory and flips CURRENT only when everything, manifest last, is on disk. With a
URI root (`s3://...`) that happens in a local staging copy, and the finished version is uploaded
before the remote CURRENT is flipped (indexes/storage.py).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import ray
from ray.data import Dataset

from core import placement
from indexes.backend_config import BackendConfig
from indexes.config import IndexesConfig
from indexes.embedder import EmbedderConfig, EmbedderSpec, embedder_spec
from indexes.layout import IndexDirectory
from indexes.lease import remote_lease
from indexes.manifest import DocumentEntry, Manifest, file_entries
from indexes.reader import VECTORS_DIR
from indexes.storage import RemoteIndexes, is_uri, mirror_current, push_version
from pipelines.config import ChunkerConfig, IndexJobConfig
from pipelines.corpus import default_source
from pipelines.metrics import record_job
from pipelines.report import ChunkCounts, DocumentCounts, FileNote, JobReport
from pipelines.sources import Listing, list_source
from pipelines.stages import (
    PARSED,
    RECORD,
    SKIPPED,
    UNCHANGED,
    ChunkEmbedder,
    DocumentProcessor,
    document_record,
)  # fmt: skip
from pipelines.write import add_chunks, open_writable, remove_chunks


@dataclass(frozen=True)
class RebuildDecision:
    full: bool
    reason: str | None = None


def decide_rebuild(
    previous: Manifest | None, spec: EmbedderSpec, config: IndexJobConfig, requested: bool
) -> RebuildDecision:
    """Increments need the same embedder, chunker and backend as the previous version."""
    if previous is None:
        return RebuildDecision(True, "first version of this index")
    if requested:
        return RebuildDecision(True, "--rebuild requested")
    checks = [
        ("embedder spec", previous.embedder.model_dump(), spec.model_dump()),
        # a setting added since the previous version was built reads as its default there: upgrading
        # rayrag does not re-embed an index whose chunks would come out the same
        ("chunker settings", _chunked_with(previous.chunker, config.chunker), _chunking(config.chunker.model_dump())),
        ("backend settings", _built_with(previous.backend, config.backend), config.backend.build_settings()),
    ]
    for label, old, new in checks:
        if old != new:
            changed = {
                k: f"{old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
            }
            return RebuildDecision(True, f"{label} changed ({', '.join(f'{k}: {v}' for k, v in changed.items())})")
    return RebuildDecision(False)


def _chunked_with(previous: dict, chunker: ChunkerConfig) -> dict:
    """The previous version's chunker settings, a setting added since read as its default, except
    `lead_chars`: a version recorded without it embedded each chunk alone, and is rebuilt with leads;
    and `lead_pooling`: one recorded without it embedded its leads alone."""
    return _chunking(type(chunker)().model_dump() | {"lead_chars": None, "lead_pooling": "separate"} | previous)


def _chunking(settings: dict) -> dict:
    """Chunker settings as they shape the vectors: without leads, how leads are pooled does not."""
    return {k: v for k, v in settings.items() if k != "lead_pooling"} if settings.get("lead_chars") is None else settings


def _built_with(previous: dict, backend: BackendConfig) -> dict:
    """The previous version's backend settings as `backend.build_settings()` names them: a setting
    added since reads as its default, and one that does not shape this index type is left out."""
    if previous.get("kind", "faiss") != backend.kind:
        return previous
    if backend.kind == "faiss":  # built before IVF-PQ re-scored its candidates: built without
        previous = {"refine": None} | previous
    try:
        return type(backend).model_validate(previous).build_settings()
    except ValueError:  # written by another rayrag: compared as it is, so the change is named
        return previous


def run_index_job(
    indexes: IndexesConfig, config: IndexJobConfig, source: str | None = None, rebuild: bool = False
) -> JobReport:
    """Build or update index `config.name` under `indexes.root`, embedded by `indexes.embedder`;
    returns the report of the new version."""
    started = time.perf_counter()
    config.check_chunks_fit(indexes.embedder)
    source = source or config.source.path or default_source(config.source.default_corpus_dir)
    check_stage_placement(config)
    embedder = indexes.embedder
    spec = embedder_spec(embedder)  # from the model's files; the embed actors check it on load
    listing = list_source(source, config.source)
    remote = RemoteIndexes(indexes.root) if is_uri(indexes.root) else None
    directory = IndexDirectory(config.staging_dir if remote else Path(indexes.root), config.name)
    lease = remote_lease(indexes.root, config.name, config.lease_s, config.single_writer)
    with directory.writer_lock(), lease if remote else nullcontext():
        directory.remove_partials()
        if remote:
            mirror_current(remote, directory)
        previous = directory.current_manifest()
        decision = decide_rebuild(previous, spec, config, rebuild)
        report = _build_version(config, embedder, directory, listing, previous, decision, spec, source, started)
        if remote:
            push_version(remote, directory, report.version, config.keep_versions)
        directory.prune(config.keep_versions, config.backend if config.backend.kind == "qdrant" else None)
    record_job(report)
    return report


def drop_index(indexes: IndexesConfig, config: IndexJobConfig) -> list[str]:
    """Remove index `config.name` from `indexes.root` (CURRENT, then every version and its Qdrant
    collection) under the writer lock or lease, as an index job does: the store stays written by
    jobs only (`rayrag index drop`, and a vector store deleted over HTTP). Returns the versions removed."""
    if not is_uri(indexes.root):
        qdrant = config.backend if config.backend.kind == "qdrant" else None
        return IndexDirectory(Path(indexes.root), config.name).drop(qdrant)
    remote = RemoteIndexes(indexes.root)
    versions = remote.versions(config.name)
    with remote_lease(indexes.root, config.name, config.lease_s, config.single_writer):
        remote.drop(config.name, "versions")
    remote.drop(config.name)  # the lease's own object went with the lease
    return versions


def check_stage_placement(config: IndexJobConfig) -> None:
    """Parse and embed actors that no node can host would wait forever: say so before starting."""
    if not ray.is_initialized() or placement.skipped():
        return
    demands = [
        placement.Demand("parse actors", config.parse.demand()),
        placement.Demand("embed actors", config.embed.demand()),
    ]
    placement.check_demands(demands, placement.cluster_shapes())


def process_documents(
    listing: Listing, config: IndexJobConfig, embedder: EmbedderConfig, known: dict[str, str]
) -> Dataset:
    items = [{"key": f.key, "path": f.path, "size": f.size} for f in listing.files]
    return ray.data.from_items(items, override_num_blocks=min(len(items), 8 * config.parse.concurrency)).flat_map(
        DocumentProcessor,
        fn_constructor_kwargs={
            "filesystem": listing.filesystem, "parse": config.parse, "chunker": config.chunker,
            "embedder": embedder, "known_hashes": ray.put(known), "probe": _probe(),
        },
        compute=ray.data.ActorPoolStrategy(size=config.parse.concurrency),
        num_cpus=config.parse.num_cpus, resources=config.parse.resources,
    )  # fmt: skip


def embed_chunks(documents: Dataset, config: IndexJobConfig, embedder: EmbedderConfig, spec: EmbedderSpec) -> Dataset:
    """Chunk rows with vectors, and each document's record row, streamed from the parse stage."""
    stage = config.embed
    return documents.map_batches(
        ChunkEmbedder,
        fn_constructor_kwargs={
            "embedder": embedder,
            "stage": stage,
            "spec": spec,
            "chunker": config.chunker,
            "probe": _probe(),
        },
        batch_size=stage.block_rows,  # sorted by length together, then cut into model calls of batch_size
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=stage.concurrency),
        num_gpus=stage.num_gpus,
        num_cpus=stage.num_cpus,
        resources=stage.resources,
    )


def _run_stages(
    config: IndexJobConfig, embedder: EmbedderConfig, listing: Listing, known: dict[str, str], spec: EmbedderSpec
) -> tuple[list[dict], Dataset | None, int]:
    """Parse every listed file (unchanged ones are only hashed) and embed the new chunks, in one
    stream: the embed actors start on the first parsed documents, not after the last.

    Returns the per-document rows (status, reason, hash), the stream (chunk rows with vectors, and
    each document's record row; `add_chunks` skips the records) and the chunks' count. The records
    are read on the driver, not split off by a Ray Data filter: that task needed a new worker process
    after the stream, 1.0-1.7 s of a one-file update here.
    """
    if not listing.files:
        return [], None, 0
    streamed = embed_chunks(process_documents(listing, config, embedder, known), config, embedder, spec).materialize()
    rows = []
    for block in streamed.iter_batches(batch_size=None, batch_format="pyarrow"):
        records = block.select([RECORD, "chunks"]).filter(pc.not_equal(block[RECORD], ""))
        rows += [document_record(row) for row in records.to_pylist()]
    added = sum(row["chunks"] for row in rows)
    if not added:
        return rows, None, 0
    return rows, streamed, added


def _stale_chunk_ids(previous: Manifest | None, rows: list[dict], decision: RebuildDecision) -> list[str]:
    """Chunks of the previous version whose document changed, failed to parse or disappeared."""
    if decision.full or previous is None:
        return []
    kept = {row["key"] for row in rows if row["status"] == UNCHANGED}
    return [cid for key, doc in previous.documents.items() if key not in kept for cid in doc.chunk_ids]


def _probe() -> str | None:
    return os.environ.get("RAYRAG_JOB_PROBE")  # the stages' test hook (pipelines/stages.py)


def checkpoint(name: str) -> None:
    """A test hook: with RAYRAG_JOB_CHECKPOINTS=<dir>, announce `name` there and wait to be killed.
    Crash tests need the job stopped at a known point; a poll racing the job cannot promise that."""
    where = os.environ.get("RAYRAG_JOB_CHECKPOINTS")
    if where:
        Path(where, name).touch()
        threading.Event().wait()


def _build_version(config, embedder, directory, listing, previous, decision, spec, source, started) -> JobReport:
    known = {} if decision.full or previous is None else {k: d.content_hash for k, d in previous.documents.items()}
    rows, embedded, added = _run_stages(config, embedder, listing, known, spec)
    stale = _stale_chunk_ids(previous, rows, decision)
    version, partial = directory.begin_version()
    base = None if decision.full else directory.current_path()
    store, vectors = open_writable(partial, base, config.backend, spec.dim, f"{config.name}-{version}")
    checkpoint("writing")  # tests kill the job here, at a known point, instead of racing a poll
    chunk_ids: dict[str, list[str]] = {}
    try:
        remove_chunks(store, vectors, stale)
        if added:
            chunk_ids = add_chunks(store, vectors, embedded, added)
        vectors.save(partial / VECTORS_DIR)
        total = store.count()
    finally:
        vectors.close()
        store.close()
    manifest = _manifest(config, version, previous, decision, spec, source, rows, chunk_ids)
    report = _report(config, version, previous, decision, source, listing, rows, added, len(stale), total, started)
    report.save(partial)
    manifest = manifest.model_copy(update={"files": file_entries(partial)})  # what readers verify
    manifest.save(partial)  # last: a version directory without a manifest is incomplete
    directory.publish(version, partial)
    return report


def _manifest(config, version, previous, decision, spec, source, rows, chunk_ids) -> Manifest:
    documents: dict[str, DocumentEntry] = {}
    for row in rows:
        if row["status"] == UNCHANGED and previous is not None:
            documents[row["key"]] = previous.documents[row["key"]]
        elif row["status"] == PARSED:
            ids = chunk_ids.get(row["key"], [])
            documents[row["key"]] = DocumentEntry(content_hash=row["content_hash"], chunk_ids=ids, size=row["size"])
    return Manifest(
        name=config.name, version=version, parent=None if decision.full or previous is None else previous.version,
        created_at=datetime.now(UTC), source=source, embedder=spec, chunker=config.chunker.model_dump(),
        backend=config.backend.model_dump(), documents=documents,
    )  # fmt: skip


def _report(config, version, previous, decision, source, listing, rows, added, removed, total, started) -> JobReport:
    skipped = [FileNote(path=i.path, reason=i.reason) for i in listing.skipped]
    skipped += [FileNote(path=r["key"], reason=r["reason"]) for r in rows if r["status"] == SKIPPED]
    warnings = [FileNote(path=r["key"], reason=r["warning"]) for r in rows if r["warning"]]
    listed_keys = {r["key"] for r in rows} | {i.path for i in listing.skipped}
    deleted = 0 if previous is None else sum(1 for key in previous.documents if key not in listed_keys)
    statuses = [r["status"] for r in rows]
    seconds = time.perf_counter() - started
    return JobReport(
        index=config.name, version=version, source=source, backend=config.backend.label,
        parent_version=None if decision.full or previous is None else previous.version,
        full_rebuild=decision.full, rebuild_reason=decision.reason,
        documents=DocumentCounts(
            listed=len(listing.files) + len(listing.skipped), parsed=statuses.count(PARSED),
            unchanged=statuses.count(UNCHANGED), skipped=len(skipped), deleted=deleted,
        ),
        chunks=ChunkCounts(added=added, removed=removed, total=total),
        seconds=round(seconds, 3), chunks_per_second=round(added / seconds, 2) if seconds else 0.0,
        skipped=skipped, warnings=warnings,
    )  # fmt: skip
