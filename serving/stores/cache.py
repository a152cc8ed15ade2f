"""Semantic answer cache: reuse an answer when a new question means the same as a cached one.

An entry is reusable only inside its partition, the hash of everything that changes an answer
besides the wording: tenant, index and its version, prompt version, model and generation parameters.
Within a partition the nearest cached question (cosine of unit vectors) must reach `threshold`.
A new index version is a new partition, so a reindex is never served stale answers; entries of the
old version are dropped the first time the new one is seen. SQLite holds the entries (shared by the
replicas of one node); the search is a brute-force dot product over one partition's vectors, which
stays well under a millisecond for the few thousand questions a partition holds between reindexes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.config import CacheConfig
from serving.stores.sqlite import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
  partition TEXT NOT NULL, index_name TEXT NOT NULL, index_version TEXT NOT NULL, question TEXT NOT NULL,
  vector BLOB NOT NULL, response TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_partition ON cache (partition);
CREATE INDEX IF NOT EXISTS cache_question ON cache (partition, question);
"""


def partition_key(**parts: Any) -> str:
    """A stable hash of the answer-shaping parameters (order-independent)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class SemanticCache:
    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # injected by tests: expiry without waiting
        self._db = open_db(config.path, _SCHEMA)
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}

    def lookup_exact(self, partition: str, question: str) -> dict[str, Any] | None:
        """The cached response of this very question (a repeat needs no embedding: the fast path)."""
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM cache WHERE partition = ? AND question = ? AND created > ? LIMIT 1",
                (partition, question, self.clock() - self.config.ttl_s),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def lookup(self, partition: str, vector: np.ndarray) -> tuple[dict[str, Any], float] | None:
        """The cached response of the nearest question in the partition and its similarity, or None."""
        with self._lock:
            rows = self._db.execute(
                "SELECT vector, response FROM cache WHERE partition = ? AND created > ? ORDER BY created DESC LIMIT ?",
                (partition, self.clock() - self.config.ttl_s, self.config.max_entries),
            ).fetchall()
        if not rows:
            return None
        vectors = np.stack([np.frombuffer(v, dtype=np.float32) for v, _ in rows])
        similarities = vectors @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(similarities))
        if similarities[best] < self.config.threshold:
            return None
        return json.loads(rows[best][1]), float(similarities[best])

    def store(
        self, partition: str, index: str, version: str, question: str, vector: np.ndarray, response: dict
    ) -> None:
        row = (
            partition,
            index,
            version,
            question,
            np.asarray(vector, dtype=np.float32).tobytes(),
            json.dumps(response),
            self.clock(),
        )
        with self._lock:
            self._db.execute("INSERT INTO cache VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            # bounded: the partition keeps its newest `max_entries`, and nothing past its TTL stays
            self._db.execute(
                "DELETE FROM cache WHERE (partition = ? AND rowid NOT IN (SELECT rowid FROM cache WHERE partition = ? "
                "ORDER BY created DESC LIMIT ?)) OR created <= ?",
                (partition, partition, self.config.max_entries, self.clock() - self.config.ttl_s),
            )

    def observe_version(self, index: str, version: str) -> int:
        """Drop the entries of `index` made on other versions when a new version shows up; how many."""
        if self._versions.get(index) == version:
            return 0
        self._versions[index] = version
        with self._lock:
            done = self._db.execute("DELETE FROM cache WHERE index_name = ? AND index_version != ?", (index, version))
        return done.rowcount
