"""Qdrant backend: embedded (`QdrantClient(path=...)`, the default) or a server (`url`).

Embedded storage lives inside the version directory, so versions are copied like files. On a
server each version is its own collection (`<prefix>-<name>`), copied point by point; the
`meta.json` beside the version says which. Payloads carry the chunk metadata, so filters can run
inside Qdrant. Scores are dot products of normalised vectors, the same as the FAISS backend.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from indexes.backend_config import QdrantConfig
from indexes.errors import TamperedIndexError
from indexes.vector import pad_results, read_meta, write_meta

STORAGE_DIR = "storage"
EMBEDDED_COLLECTION = "chunks"


class QdrantIndex:
    """One Qdrant collection seen through the VectorIndex Protocol."""

    def __init__(self, client: QdrantClient, collection: str, dim: int, config: QdrantConfig, path: Path) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.config = config
        self.path = path

    @classmethod
    def create(cls, path: Path, dim: int, config: QdrantConfig, name: str) -> QdrantIndex:
        collection = f"{config.collection_prefix}-{name}" if config.url else EMBEDDED_COLLECTION
        client = _client(config, path)
        client.create_collection(collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
        index = cls(client, collection, dim, config, path)
        index.save(path)
        return index

    @classmethod
    def open(cls, path: Path, trusted: QdrantConfig | None = None) -> QdrantIndex:
        """Embedded storage opens from its files; a server-backed version only with the server the
        config names (`trusted`): a tampered meta.json must not choose the host, nor which secret of
        the process's environment is sent to it as an API key."""
        meta = read_meta(path)
        try:
            stored = QdrantConfig.model_validate(meta["config"])
        except ValueError as exc:
            raise TamperedIndexError(f"{path}/meta.json holds a config no index job writes: {exc}") from None
        if stored.url is None:
            config = stored
        elif trusted is not None and trusted.url == stored.url:
            config = trusted
        else:
            raise TamperedIndexError(
                f"{path}: the version names a Qdrant server that the config does not "
                "(set the backend's url and api_key_env in the config to serve it)"
            )
        return cls(_client(config, path), meta["collection"], meta["dim"], config, path)

    @property
    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def add(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        ids = [int(i) for i in ids]
        payloads = payloads or [{} for _ in ids]
        step = self.config.upsert_batch
        for start in range(0, len(ids), step):
            self.client.upsert(
                self.collection,
                points=models.Batch(
                    ids=ids[start : start + step],
                    vectors=np.asarray(vectors[start : start + step], dtype=np.float32).tolist(),
                    payloads=payloads[start : start + step],
                ),
            )

    def delete(self, ids: np.ndarray) -> None:
        if len(ids):
            selector = models.PointIdsList(points=[int(i) for i in ids])
            self.client.delete(self.collection, points_selector=selector)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        requests = [models.QueryRequest(query=np.asarray(v, dtype=float).tolist(), limit=k) for v in vectors]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        rows = [[(int(p.id), float(p.score)) for p in response.points] for response in responses]
        return pad_results(rows, k)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        wanted = [int(i) for i in ids]
        points = self.client.retrieve(self.collection, ids=wanted, with_vectors=True, with_payload=False)
        found = {int(p.id): p.vector for p in points}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"ids not in collection {self.collection!r}: {missing[:5]}")
        return np.asarray([found[i] for i in wanted], dtype=np.float32).reshape(len(wanted), self.dim)

    def save(self, path: Path) -> None:
        if path != self.path:
            self.copy_to(path, path.name)
            return
        meta = {"kind": "qdrant", "collection": self.collection, "dim": self.dim}
        write_meta(path, meta | {"config": self.config.model_dump()})

    def copy_to(self, path: Path, name: str) -> QdrantIndex:
        if self.config.url:
            copy = QdrantIndex.create(path, self.dim, self.config, name)
            self._copy_points_into(copy)
            return copy
        self.client.close()  # embedded storage is files: flush and release them before copying
        shutil.copytree(self.path / STORAGE_DIR, path / STORAGE_DIR)
        self.client = _client(self.config, self.path)
        copy = QdrantIndex(_client(self.config, path), self.collection, self.dim, self.config, path)
        copy.save(path)
        return copy

    def drop(self) -> None:
        if self.config.url:
            self.client.delete_collection(self.collection)
        self.client.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        self.client.close()

    def _copy_points_into(self, other: QdrantIndex) -> None:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, limit=self.config.upsert_batch, offset=offset, with_vectors=True, with_payload=True
            )
            if points:
                other.add(
                    np.array([p.id for p in points]), np.array([p.vector for p in points]), [p.payload for p in points]
                )
            if offset is None:
                return


def _client(config: QdrantConfig, path: Path) -> QdrantClient:
    if config.url:
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        return QdrantClient(url=config.url, api_key=api_key)
    return QdrantClient(path=str(path / STORAGE_DIR))
