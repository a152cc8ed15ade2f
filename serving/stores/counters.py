"""Atomic counters shared by gateway replicas: `add` increments and returns the new total in one step.

Redis: `INCRBY` + `EXPIRE NX` in one MULTI transaction (atomic across replicas and hosts). SQLite
(one node): an UPSERT ... RETURNING inside `BEGIN IMMEDIATE`, which takes the write lock before
reading, so concurrent processes serialise on it. Keys may expire (`ttl_s`) so per-minute windows
clean themselves up.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

from serving.stores.sqlite import open_db


class Counter(Protocol):
    def add(self, key: str, amount: int, ttl_s: int | None = None) -> int: ...

    def get(self, key: str) -> int: ...


class SqliteCounter:
    def __init__(self, path: Path) -> None:
        self._db = open_db(
            path, "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL);"
        )
        self._lock = threading.Lock()  # one connection, many request threads: one transaction at a time

    def add(self, key: str, amount: int, ttl_s: int | None = None) -> int:
        with self._lock:
            return self._add(key, amount, ttl_s)

    def _add(self, key: str, amount: int, ttl_s: int | None) -> int:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # every expired window goes (not only this key's): counters of past minutes do not pile up
            self._db.execute("DELETE FROM counters WHERE expires IS NOT NULL AND expires <= ?", (now,))
            (value,) = self._db.execute(
                "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value "
                "RETURNING value",
                (key, amount, now + ttl_s if ttl_s else None),
            ).fetchone()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return int(value)

    def get(self, key: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE key = ? AND (expires IS NULL OR expires > ?)", (key, time.time())
            ).fetchone()
        return int(row[0]) if row else 0


class RedisCounter:
    def __init__(self, url: str, prefix: str = "rayrag:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def add(self, key: str, amount: int, ttl_s: int | None = None) -> int:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(self._prefix + key, amount)
            if ttl_s:
                pipe.expire(self._prefix + key, ttl_s, nx=True)
            return int(pipe.execute()[0])

    def get(self, key: str) -> int:
        value = self._redis.get(self._prefix + key)
        return int(value) if value is not None else 0
