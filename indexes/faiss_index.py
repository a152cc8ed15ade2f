"""FAISS backend: flat, HNSW or IVF-PQ, inner product on normalised vectors.

Ids: flat and HNSW sit inside an `IndexIDMap2` (HNSW has no ids of its own); IVF-PQ stores ids
natively, because `IndexIDMap2.remove_ids` assumes the inner index renumbers compactly, which IVF
does not.

Deletion in HNSW: the graph cannot drop nodes, so `delete` rebuilds the graph from the vectors it
already stores (no re-embedding). That costs a rebuild per incremental run that removes chunks,
which is cheap next to embedding; tombstones would instead leak stale hits into every search.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np

from indexes.backend_config import FaissConfig
from indexes.vector import read_meta, write_meta

INDEX_FILE = "index.faiss"


class TrainingDataError(ValueError):
    """Too few vectors to train an IVF-PQ index with the configured settings."""


class FaissIndex:
    """A FAISS index plus the settings it was built with."""

    def __init__(self, index: faiss.Index, config: FaissConfig, path: Path | None = None) -> None:
        self.index = index
        self.config = config
        self.path = path

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, config: FaissConfig, path: Path | None = None) -> FaissIndex:
        return cls(_new_faiss_index(dim, config), config, path)

    @classmethod
    def open(cls, path: Path) -> FaissIndex:
        config = FaissConfig.model_validate(read_meta(path)["config"])
        return cls(faiss.read_index(str(path / INDEX_FILE)), config, path)

    @classmethod
    def from_bytes(cls, data: np.ndarray, config: FaissConfig) -> FaissIndex:
        return cls(faiss.deserialize_index(data), config)

    # -- the VectorIndex Protocol ----------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def train(self, vectors: np.ndarray) -> None:
        """Train IVF-PQ codebooks; refuses a sample too small to train on, naming the settings."""
        needed = max(self.config.nlist, 2**self.config.pq_nbits)
        if len(vectors) < needed:
            raise TrainingDataError(
                f"ivf_pq needs at least {needed} vectors to train (nlist={self.config.nlist}, "
                f"pq_nbits={self.config.pq_nbits}) but got {len(vectors)}: use index_type flat or hnsw "
                "for a corpus this small, or lower backend.nlist / backend.pq_nbits"
            )
        self.index.train(_as_matrix(vectors))

    def add(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        """Add vectors; payloads are not kept here, the chunk store holds the metadata."""
        if len(ids) == 0:
            return
        if self.needs_training:
            raise RuntimeError("ivf_pq index is not trained: call train() with a sample first")
        self.index.add_with_ids(_as_matrix(vectors), np.asarray(ids, dtype=np.int64))

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or self.count == 0:
            return
        if self.config.index_type == "hnsw":
            self._rebuild_without(ids)
        else:
            self.index.remove_ids(ids)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._set_search_params()
        scores, ids = self.index.search(_as_matrix(vectors), k)
        scores[ids < 0] = -np.inf
        return ids.astype(np.int64), scores.astype(np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if self.config.index_type == "ivf_pq":
            ivf = faiss.extract_index_ivf(self.index)
            if ivf.direct_map.type != faiss.DirectMap.Hashtable:  # ids are not 0..n-1: a hash map, built once
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        rows = [self.index.reconstruct(int(i)) for i in ids]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def save(self, path: Path) -> None:
        write_meta(path, {"kind": "faiss", "config": self.config.model_dump()})
        faiss.write_index(self.index, str(path / INDEX_FILE))
        self.path = path

    def copy_to(self, path: Path, name: str) -> FaissIndex:
        copy = FaissIndex(faiss.clone_index(self.index), self.config)
        copy.save(path)
        return copy

    def drop(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        """Nothing to release: the index lives in memory."""

    # -- sharded builds (ShardableIndex) --------------------------------------------------
    def empty_copy(self) -> FaissIndex:
        """An empty index with the same settings and, for IVF-PQ, the same trained codebooks."""
        if self.config.index_type == "ivf_pq":
            clone = faiss.clone_index(self.index)
            clone.reset()
            return FaissIndex(clone, self.config)
        return FaissIndex.create(self.dim, self.config)

    def merge_from(self, other: FaissIndex) -> None:
        """Move other's vectors into self (HNSW graphs cannot merge, so HNSW re-inserts them)."""
        if self.config.index_type == "hnsw":
            ids, vectors = other.stored_vectors()
            self.add(ids, vectors)
        else:
            self.index.merge_from(other.index, 0)

    def to_bytes(self) -> np.ndarray:
        return faiss.serialize_index(self.index)

    def stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) held by a flat or HNSW index, read back from FAISS itself."""
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = self.index.index.reconstruct_n(0, self.count) if self.count else np.empty((0, self.dim))
        return ids, np.asarray(vectors, dtype=np.float32)

    # -- internals ----------------------------------------------------------------------
    def _rebuild_without(self, ids: np.ndarray) -> None:
        all_ids, vectors = self.stored_vectors()
        keep = ~np.isin(all_ids, ids)
        fresh = _new_faiss_index(self.dim, self.config)
        fresh.add_with_ids(vectors[keep], all_ids[keep])
        self.index = fresh

    def _set_search_params(self) -> None:
        if self.config.index_type == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.config.ef_search
        elif self.config.index_type == "ivf_pq":
            self.index.nprobe = self.config.nprobe


def _new_faiss_index(dim: int, config: FaissConfig) -> faiss.Index:
    if config.index_type == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if config.index_type == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = config.ef_construction
        return faiss.IndexIDMap2(graph)
    if dim % config.pq_m:
        raise ValueError(f"backend.pq_m={config.pq_m} must divide the embedding dimension {dim}")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.pq_m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    return index


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)
