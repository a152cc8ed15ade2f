"""The VectorIndex Protocol and the factory that opens the right backend for a directory.

Every backend keeps a `meta.json` in its directory saying which backend it is, so a version can
be opened without its config. Ids are the 63-bit vector ids from `indexes.store.vector_id`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

META_FILE = "meta.json"
MISSING_ID = -1


@runtime_checkable
class VectorIndex(Protocol):
    """What serving and the index job need from a vector backend."""

    dim: int

    @property
    def count(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        """Add vectors; payloads are stored where the backend supports it (the chunk store always has them)."""

    def delete(self, ids: np.ndarray) -> None:
        """Remove ids; unknown ids are ignored."""

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores), each shaped (n_queries, k), best first; missing slots have id -1."""

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids`, shaped (len(ids), dim), in that order (IVF-PQ: as its codes
        reconstruct them): MMR diversifies candidates with these instead of embedding them again."""

    def save(self, path: Path) -> None:
        """Persist into directory `path` so that `open_vector_index(path)` gives the same index."""

    def copy_to(self, path: Path, name: str) -> VectorIndex:
        """A writable copy stored at `path` (named `name` where the backend names things); self is untouched."""

    def drop(self) -> None:
        """Delete the index's storage (files or server collection)."""

    def close(self) -> None: ...


@runtime_checkable
class ShardableIndex(Protocol):
    """Backends whose partial indexes can be built apart (in Ray tasks) and merged.

    Such a backend may need training on a sample before anything is added (IVF-PQ).
    """

    @property
    def needs_training(self) -> bool: ...

    @property
    def builds_in_shards(self) -> bool:
        """Whether adding is work that shard tasks divide (encoding), not a copy or a graph that
        would be built again when merged: the index job then builds shards in parallel tasks."""

    def train(self, vectors: np.ndarray, expected: int | None = None) -> None:
        """Train on a sample, sized for about `expected` vectors (default: the sample's size)."""

    def empty_copy(self) -> ShardableIndex: ...

    def merge_from(self, other: ShardableIndex) -> None: ...

    def to_bytes(self) -> np.ndarray: ...


def read_meta(path: Path) -> dict:
    return json.loads((path / META_FILE).read_text())


def write_meta(path: Path, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / META_FILE).write_text(json.dumps(meta, indent=1))


def pad_results(rows: list[list[tuple[int, float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn per-query (id, score) lists into the (ids, scores) arrays of the Protocol."""
    ids = np.full((len(rows), k), MISSING_ID, dtype=np.int64)
    scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, (vid, score) in enumerate(row[:k]):
            ids[i, j], scores[i, j] = vid, score
    return ids, scores
