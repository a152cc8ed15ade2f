"""API keys: issued once, stored hashed, owned by a tenant, scoped to indexes and models, and
allowed to write (upload documents, start index jobs) only to the indexes of their `ingest` scope.

A key is `rr_<key_id>_<secret>`; only sha256(secret) is stored. A fast hash is right here (and is
what GitHub and Stripe do) because the secret is 256 random bits, not a password: there is nothing
to brute-force, and lookups stay O(1) per request. SQLite keeps the store on one node; point
several gateway replicas of one machine at the same file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

from pydantic import BaseModel, Field

from serving.stores.sqlite import open_db

ANY = "*"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  key_id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, tenant TEXT NOT NULL, record TEXT NOT NULL,
  created REAL NOT NULL, revoked REAL
);
"""


class KeyLimits(BaseModel):
    """Per-key overrides of the configured quotas; null keeps the default."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    credit_budget: int | None = Field(default=None, ge=1)


class Principal(BaseModel):
    """Who is calling and what they may use."""

    key_id: str
    tenant: str
    indexes: list[str] = Field(default_factory=lambda: [ANY])
    models: list[str] = Field(default_factory=lambda: [ANY])
    ingest: list[str] = Field(default_factory=list)  # indexes it may write to; none unless granted
    limits: KeyLimits = KeyLimits()
    created: float = 0.0
    revoked: float | None = None

    def may_use_index(self, index: str) -> bool:
        return ANY in self.indexes or index in self.indexes

    def may_ingest(self, index: str) -> bool:
        return ANY in self.ingest or index in self.ingest

    def may_use_model(self, model: str) -> bool:
        return ANY in self.models or model in self.models

    @property
    def model_scope(self) -> list[str] | None:
        """The models this key is limited to, or None when it may use any (what the router is held to)."""
        return None if ANY in self.models else list(self.models)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "rr" and parts[1] and parts[2] else None


class KeyStore:
    def __init__(self, path: Path) -> None:
        self._db = open_db(path, _SCHEMA)

    def create(
        self, tenant: str, indexes: list[str], models: list[str], limits: KeyLimits | None = None,
        ingest: list[str] | None = None,
    ) -> tuple[str, Principal]:  # fmt: skip
        """A new key; the plaintext is returned here and never stored."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32).replace("_", "-")
        principal = Principal(
            key_id=key_id,
            tenant=tenant,
            indexes=indexes,
            models=models,
            ingest=ingest or [],
            limits=limits or KeyLimits(),
            created=time.time(),
        )
        record = principal.model_dump_json(include={"indexes", "models", "ingest", "limits"})
        self._db.execute(
            "INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
            (key_id, _digest(secret), tenant, record, principal.created),
        )
        return f"rr_{key_id}_{secret}", principal

    def lookup(self, key: str) -> Principal | None:
        """The live principal for a presented key, or None (unknown, wrong secret or revoked)."""
        parts = split_key(key)
        if parts is None:
            return None
        row = self._db.execute("SELECT * FROM keys WHERE key_id = ?", (parts[0],)).fetchone()
        if row is None or row[5] is not None or not hmac.compare_digest(row[1], _digest(parts[1])):
            return None
        return _principal(row)

    def list(self) -> list[Principal]:
        return [_principal(row) for row in self._db.execute("SELECT * FROM keys ORDER BY created")]

    def revoke(self, key_id: str) -> bool:
        done = self._db.execute(
            "UPDATE keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (time.time(), key_id)
        )
        return done.rowcount == 1

    def close(self) -> None:
        self._db.close()


def _principal(row: tuple) -> Principal:
    key_id, _, tenant, record, created, revoked = row
    return Principal(key_id=key_id, tenant=tenant, created=created, revoked=revoked, **json.loads(record))
