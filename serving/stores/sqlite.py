"""How every single-node store of the gateway opens SQLite: one connection shared by the replica's
threads (callers serialise with a lock), autocommit so transactions are explicit (`BEGIN IMMEDIATE`
where a read-modify-write must be atomic), WAL so the gateway replicas of one node read while one
writes, and a 30 s busy timeout instead of "database is locked" under load."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db
