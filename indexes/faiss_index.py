"""FAISS backend: flat, HNSW or IVF-PQ, inner product on normalised vectors.

Ids: flat and HNSW sit inside an `IndexIDMap2` (HNSW has no ids of its own); IVF-PQ stores ids
natively, because `IndexIDMap2.remove_ids` assumes the inner index renumbers compactly, which IVF
does not.

Deletion in HNSW: the graph cannot drop nodes, so `delete` rebuilds the graph from the vectors it
already stores (no re-embedding). That costs a rebuild per incremental run that removes chunks,
which is cheap next to embedding; tombstones would instead leak stale hits into every search.

IVF-PQ refine: PQ codes rank too coarsely to find the top 10 of a million vectors (recall@10 was
0.017 in `bench/ann.py`), so `refine_candidates` candidates are re-scored on the vectors kept in a
second, id-mapped index (fp16 by default: half the float size, and it ranks as exact search does).
FAISS's own `IndexRefine` does the same, but it numbers vectors by position: it cannot take our
chunk ids (`add_with_ids`) nor remove them, which every incremental index run needs. A flat or SQ
index inside `IndexIDMap2` can, and it also gives MMR the stored vectors.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import faiss
import numpy as np

from indexes.backend_config import FaissConfig
from indexes.vector import read_meta, write_meta

INDEX_FILE = "index.faiss"
REFINE_FILE = "refine.faiss"
MIN_NLIST = 16
POINTS_PER_LIST = 39  # FAISS's k-means warns below 39 training vectors a centroid


def ivf_shape(expected: int, sample: int) -> tuple[int, int]:
    """(nlist, nprobe) for an index of about `expected` vectors trained on `sample` of them: about
    4·sqrt(n) lists (FAISS's guideline), a power of two, with at least 39 training vectors a list,
    and 1/64 of the lists probed (at least 8). On the clustered vectors of bench/ann.py the number
    of candidates re-scored, not of lists probed, bounds recall: at 1M, 1/32 or 1/64 of 2,048 lists
    gave the same recall, and each doubling cost about 0.2 ms a query."""
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(max(expected, 1)))))
    while nlist > MIN_NLIST and sample < POINTS_PER_LIST * nlist:
        nlist //= 2
    nlist = max(MIN_NLIST, nlist)
    return nlist, min(nlist, max(8, nlist // 64))


class TrainingDataError(ValueError):
    """Too few vectors to train an IVF-PQ index with the configured settings."""


class FaissIndex:
    """A FAISS index plus the settings it was built with."""

    def __init__(
        self, index: faiss.Index, config: FaissConfig, path: Path | None = None, refine: faiss.Index | None = None
    ) -> None:
        self.index = index
        self.config = config
        self.path = path
        self.refine = refine  # IVF-PQ only: full vectors by id, for re-scoring candidates
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # the refine index's ids, sorted (see _stored)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, config: FaissConfig, path: Path | None = None) -> FaissIndex:
        """A new index. IVF-PQ with `nlist: null` gets its lists when it is trained (`train`); until
        then it is an untrained index of the smallest size."""
        return cls(_new_faiss_index(dim, config), config, path)

    @classmethod
    def open(cls, path: Path) -> FaissIndex:
        config = FaissConfig.model_validate(read_meta(path)["config"])
        refine = faiss.read_index(str(path / REFINE_FILE)) if (path / REFINE_FILE).exists() else None
        if refine is None and config.index_type == "ivf_pq":  # written before refine existed
            config = config.model_copy(update={"refine": None})
        return cls(faiss.read_index(str(path / INDEX_FILE)), config, path, refine)

    @classmethod
    def from_bytes(cls, data: np.ndarray, config: FaissConfig) -> FaissIndex:
        head = int(np.frombuffer(data[:8].tobytes(), dtype=np.int64)[0])
        main, rest = data[8 : 8 + head], data[8 + head :]
        return cls(faiss.deserialize_index(main), config, refine=faiss.deserialize_index(rest) if len(rest) else None)

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

    @property
    def builds_in_shards(self) -> bool:
        """IVF-PQ only: its add encodes every vector. A flat add is a copy, and HNSW graphs cannot be
        merged (`merge_from` inserts the shard's vectors again), so shards of those only add work."""
        return self.config.index_type == "ivf_pq"

    def train(self, vectors: np.ndarray, expected: int | None = None) -> None:
        """Size (when `nlist`/`nprobe` are null, for `expected` vectors) and train IVF-PQ; refuses a
        sample too small to train on, naming the settings."""
        vectors = _as_matrix(vectors)
        nlist, nprobe = ivf_shape(expected or len(vectors), len(vectors))
        config = self.config.model_copy(update={"nlist": self.config.nlist or nlist, "nprobe": self.config.nprobe or nprobe})
        needed = max(config.nlist, 2**config.pq_nbits)
        if len(vectors) < needed:
            raise TrainingDataError(
                f"ivf_pq needs at least {needed} vectors to train (nlist={config.nlist}, "
                f"pq_nbits={config.pq_nbits}) but got {len(vectors)}: use index_type flat or hnsw "
                "for a corpus this small, or lower backend.nlist / backend.pq_nbits"
            )
        self.config, self.index = config, _new_faiss_index(self.dim, config)
        self.index.train(vectors)
        self.refine, self._lookup = _new_refine(self.dim, config.refine), None
        if self.refine is not None:
            self.refine.train(vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        """Add vectors; payloads are not kept here, the chunk store holds the metadata."""
        if len(ids) == 0:
            return
        if self.needs_training:
            raise RuntimeError("ivf_pq index is not trained: call train() with a sample first")
        vectors, ids = _as_matrix(vectors), np.asarray(ids, dtype=np.int64)
        self.index.add_with_ids(vectors, ids)
        if self.refine is not None:
            self.refine.add_with_ids(vectors, ids)
            self._lookup = None

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or self.count == 0:
            return
        if self.config.index_type == "hnsw":
            self._rebuild_without(ids)
        else:
            self.index.remove_ids(ids)
            if self.refine is not None:
                self.refine.remove_ids(ids)
                self._lookup = None

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._set_search_params()
        queries = _as_matrix(vectors)
        if self.refine is not None and self.count:
            return self._refined_search(queries, k)
        scores, ids = self.index.search(queries, k)
        scores[ids < 0] = -np.inf
        return ids.astype(np.int64), scores.astype(np.float32)

    def _refined_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates (`refine_candidates`, at least 2 x k) re-scored on the refine index's vectors."""
        _, candidates = self.index.search(queries, max(2 * k, self.config.refine_candidates))
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = found[found >= 0]
            if len(found) == 0:
                continue
            exact = self._stored(found) @ query
            best = np.argsort(-exact, kind="stable")[:k]
            ids[row, : len(best)], scores[row, : len(best)] = found[best], exact[best]
        return ids, scores

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        """The refine index's vectors of `ids` (all held), read straight from its code array.

        `IndexIDMap2.reconstruct_batch` does the same one id at a time (a hash lookup and a decode
        each): 1.2 ms for 1,000 candidates at 1M vectors, three times HNSW's whole query. Here the
        ids are looked up at once in a sorted copy of the id map (made once after each change) and
        the fp16 or float rows are gathered from a view of the codes, without copying them."""
        count = self.refine.ntotal
        if self._lookup is None:
            stored = faiss.rev_swig_ptr(self.refine.id_map.data(), count).copy()
            order = np.argsort(stored, kind="stable")
            self._lookup = (stored[order], order)
        sorted_ids, order = self._lookup
        positions = order[np.searchsorted(sorted_ids, ids)]
        inner = faiss.downcast_index(self.refine.index)
        codes = faiss.rev_swig_ptr(inner.codes.data(), count * inner.code_size).reshape(count, inner.code_size)
        rows = codes[positions]
        if self.config.refine == "flat":
            return rows.view(np.float32)
        return inner.sa_decode(rows)  # FAISS's fp16 decoding: twice numpy's astype

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if self.refine is not None:
            return self._stored(np.asarray(ids, dtype=np.int64))
        if self.config.index_type == "ivf_pq":
            ivf = faiss.extract_index_ivf(self.index)
            if ivf.direct_map.type != faiss.DirectMap.Hashtable:  # ids are not 0..n-1: a hash map, built once
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        rows = [self.index.reconstruct(int(i)) for i in ids]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def save(self, path: Path) -> None:
        write_meta(path, {"kind": "faiss", "config": self.config.model_dump()})
        faiss.write_index(self.index, str(path / INDEX_FILE))
        if self.refine is not None:
            faiss.write_index(self.refine, str(path / REFINE_FILE))
        self.path = path

    def copy_to(self, path: Path, name: str) -> FaissIndex:
        copy = FaissIndex(faiss.clone_index(self.index), self.config, refine=_clone(self.refine))
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
            clone, refine = faiss.clone_index(self.index), _clone(self.refine)
            clone.reset()
            if refine is not None:
                refine.reset()
            return FaissIndex(clone, self.config, refine=refine)
        return FaissIndex.create(self.dim, self.config)

    def merge_from(self, other: FaissIndex) -> None:
        """Move other's vectors into self (HNSW graphs cannot merge, so HNSW re-inserts them)."""
        if self.config.index_type == "hnsw":
            ids, vectors = other.stored_vectors()
            self.add(ids, vectors)
        else:
            self.index.merge_from(other.index, 0)
            if self.refine is not None:
                self.refine.merge_from(other.refine, 0)
                self._lookup = None

    def to_bytes(self) -> np.ndarray:
        """The index and its refine index in one array: their lengths, then each (for Ray tasks)."""
        main = faiss.serialize_index(self.index)
        rest = faiss.serialize_index(self.refine) if self.refine is not None else np.empty(0, dtype=np.uint8)
        return np.concatenate([np.frombuffer(np.int64(len(main)).tobytes(), dtype=np.uint8), main, rest])

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
            self.index.nprobe = self.config.nprobe or 8


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
    nlist = config.nlist or MIN_NLIST
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    return index


def _new_refine(dim: int, kind: str | None) -> faiss.Index | None:
    if kind is None:
        return None
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    else:
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    refine = faiss.IndexIDMap2(inner)
    refine.own_fields = True
    inner.this.disown()
    return refine


def _clone(index: faiss.Index | None) -> faiss.Index | None:
    return faiss.clone_index(index) if index is not None else None


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)
