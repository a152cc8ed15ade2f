"""The one place that knows every vector backend: make a new index of the configured kind, or open
the kind a stored index names. The protocol module (indexes/vector.py) imports no backend and the
backends import only it, so there is no cycle. Each backend is imported when first used: a FAISS
reader never pays for importing the Qdrant client, nor the reverse."""

from __future__ import annotations

from pathlib import Path

from indexes.backend_config import BackendConfig, FaissConfig, QdrantConfig
from indexes.vector import META_FILE, VectorIndex, read_meta


def create_vector_index(path: Path, dim: int, config: BackendConfig, name: str) -> VectorIndex:
    """A new, empty index of the configured backend, stored at `path`."""
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(config, FaissConfig):
        from indexes.faiss_index import FaissIndex

        return FaissIndex.create(dim, config, path)
    if isinstance(config, QdrantConfig):
        from indexes.qdrant_index import QdrantIndex

        return QdrantIndex.create(path, dim, config, name)
    raise TypeError(f"unknown backend config {config!r}")


def open_vector_index(path: Path, qdrant: QdrantConfig | None = None) -> VectorIndex:
    """Open whatever backend `path/meta.json` names. A Qdrant server's URL and key come from `qdrant`
    (the config), never from the store: meta.json is only as trusted as whoever can write the root."""
    meta = read_meta(path)
    if meta["kind"] == "faiss":
        from indexes.faiss_index import FaissIndex

        return FaissIndex.open(path)
    if meta["kind"] == "qdrant":
        from indexes.qdrant_index import QdrantIndex

        return QdrantIndex.open(path, qdrant)
    raise ValueError(f"{path / META_FILE}: unknown backend kind {meta['kind']!r}")
