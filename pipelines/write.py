"""Write a new index version: chunk store and vectors, copied forward from the previous version.

The chunks go into the store on the driver as the embedded blocks pass; so do their vectors (a flat
FAISS add is a copy, an HNSW graph cannot be merged from shards, Qdrant takes batches with payloads),
except IVF-PQ's, which are encoded in shards by parallel Ray tasks and merged on the driver (the
approach of Ray's docs-search example).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import ray
from ray.data import Dataset
from ray.data.expressions import col
from tqdm import tqdm

from indexes.backend_config import BackendConfig, QdrantConfig
from indexes.backends import create_vector_index, open_vector_index
from indexes.faiss_index import FaissIndex
from indexes.reader import VECTORS_DIR
from indexes.store import STORE_FILE, ChunkStore, vector_id
from indexes.vector import ShardableIndex, VectorIndex
from pipelines.stages import CHUNK_COLUMNS, RECORD, chunk_from_row

TRAIN_SAMPLE = 65_536  # IVF-PQ trains on these: 39 a list for up to 1,680 lists (ivf_shape)
DRIVER_BATCH = 1024


def open_writable(partial: Path, previous: Path | None, backend: BackendConfig, dim: int, name: str):
    """Chunk store and vector index for the new version: copies of the previous one, or empty."""
    if previous is None:
        return ChunkStore.open(partial), create_vector_index(partial / VECTORS_DIR, dim, backend, name)
    shutil.copy2(previous / STORE_FILE, partial / STORE_FILE)
    old = open_vector_index(previous / VECTORS_DIR, backend if isinstance(backend, QdrantConfig) else None)
    try:
        vectors = old.copy_to(partial / VECTORS_DIR, name)
    finally:
        old.close()
    return ChunkStore.open(partial), vectors


def remove_chunks(store: ChunkStore, vectors: VectorIndex, chunk_ids: list[str]) -> None:
    store.delete(chunk_ids)
    vectors.delete(np.array([vector_id(c) for c in chunk_ids], dtype=np.int64))


def add_chunks(store: ChunkStore, vectors: VectorIndex, embedded: Dataset, total: int) -> dict[str, list[str]]:
    """Store every embedded chunk of the job's stream (its document record rows are skipped here);
    vectors are added on the driver as they pass, or built in shards (`ShardableIndex.builds_in_shards`).

    On the driver, a small job runs no Ray task after its stream: the first one needed a new worker
    process, 1.0-1.7 s of a 5 s one-file update here.

    Returns each document's chunk ids for the manifest.
    """
    chunk_ids: dict[str, list[str]] = {}
    sharded = isinstance(vectors, ShardableIndex) and vectors.builds_in_shards
    if sharded:
        embedded = embedded.filter(expr=col(RECORD) == "").materialize()  # read by training, store, shards
        if vectors.needs_training:
            vectors.train(_training_sample(embedded), expected=total)
    with tqdm(total=total, desc="Write chunks", unit="chunk") as progress:
        for batch in embedded.iter_batches(batch_size=DRIVER_BATCH, batch_format="numpy"):
            rows = np.flatnonzero(batch[RECORD] == "")
            chunks = [chunk_from_row({k: batch[k][i] for k in CHUNK_COLUMNS}) for i in rows]
            store.add(chunks)
            for chunk in chunks:
                chunk_ids.setdefault(chunk.source, []).append(chunk.chunk_id)
            if not sharded and len(rows):
                vectors.add(batch["vid"][rows], batch["vector"][rows], [c.payload() for c in chunks])
            progress.update(len(chunks))
    if sharded:
        _merge_shards(vectors, embedded)
    return chunk_ids


@ray.remote
def _build_shard(template: np.ndarray, config, *blocks: dict) -> np.ndarray:
    shard = FaissIndex.from_bytes(template, config)
    for block in blocks:
        shard.add(block["vid"], block["vector"])
    return shard.to_bytes()


def _merge_shards(index: FaissIndex, embedded: Dataset) -> None:
    """Build `index.config.shards` partial indexes in parallel Ray tasks, then merge them into `index`."""
    shards = index.config.shards
    refs = embedded.select_columns(["vid", "vector"]).to_numpy_refs()
    groups = [
        list(group) for group in np.array_split(np.array(refs, dtype=object), min(shards, len(refs))) if len(group)
    ]
    template = ray.put(index.empty_copy().to_bytes())
    pending = [_build_shard.remote(template, index.config, *group) for group in groups]
    for shard in tqdm(ray.get(pending), desc="Merge index shards", unit="shard"):
        index.merge_from(FaissIndex.from_bytes(shard, index.config))


def _training_sample(embedded: Dataset) -> np.ndarray:
    rows = embedded.select_columns(["vector"]).take(TRAIN_SAMPLE)
    return np.stack([row["vector"] for row in rows]) if rows else np.empty((0, 0), dtype=np.float32)
