"""Open an index version for reading: manifest + chunk store + vectors, searched together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexes.backend_config import QdrantConfig
from indexes.backends import open_vector_index
from indexes.layout import IndexNotFoundError
from indexes.manifest import Manifest
from indexes.store import Chunk, ChunkStore
from indexes.vector import VectorIndex

VECTORS_DIR = "vectors"


@dataclass(frozen=True)
class Hit:
    """A search result: the chunk and how well it matched."""

    chunk: Chunk
    score: float


class IndexVersion:
    """One complete, immutable index version."""

    def __init__(self, path: Path, qdrant: QdrantConfig | None = None) -> None:
        self.path = path
        self.manifest = Manifest.load(path)
        self.store = ChunkStore.open(path)
        self.vectors: VectorIndex = open_vector_index(path / VECTORS_DIR, qdrant)

    @classmethod
    def open_current(cls, root: str | Path, name: str) -> IndexVersion:
        """The CURRENT version of `name` under a directory or a URI (downloaded once if remote)."""
        from indexes.storage import locate

        location = locate(root, name)
        version = location.current_version()
        if version is None:
            raise IndexNotFoundError(f"index {name!r} has no published version at {location.describe()}")
        return cls(location.local_path(version))

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
