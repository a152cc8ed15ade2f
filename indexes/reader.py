"""Open an index version for reading: manifest + chunk store + vectors, searched together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexes.layout import IndexDirectory
from indexes.manifest import Manifest
from indexes.store import Chunk, ChunkStore
from indexes.vector import VectorIndex, open_vector_index

VECTORS_DIR = "vectors"


@dataclass(frozen=True)
class Hit:
    """A search result: the chunk and how well it matched."""

    chunk: Chunk
    score: float


class IndexVersion:
    """One complete, immutable index version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = Manifest.load(path)
        self.store = ChunkStore.open(path)
        self.vectors: VectorIndex = open_vector_index(path / VECTORS_DIR)

    @classmethod
    def open_current(cls, root: Path, name: str) -> IndexVersion:
        return cls(IndexDirectory(root, name).current_path())

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks per query, joined with their text and metadata."""
        ids, scores = self.vectors.search(np.atleast_2d(query_vectors), k)
        chunks = self.store.get([int(i) for i in ids.ravel() if i >= 0])
        return [
            [Hit(chunks[int(i)], float(s)) for i, s in zip(row_ids, row_scores, strict=True) if int(i) in chunks]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def close(self) -> None:
        self.store.close()
        self.vectors.close()
