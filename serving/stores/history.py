"""Conversation history by `session_id`: stored with a TTL in SQLite (one node) or Redis (any number
of gateway replicas), so a conversation survives a gateway restart.

A session belongs to the tenant that made it and to the index scope of the key that made it: the
store is keyed by (owner, session id), where the owner is the tenant plus, for a key limited to some
indexes, that scope. So another tenant's id is simply not found, and neither is a conversation held
by a key of the same tenant with another scope (a key limited to index Y cannot read or continue a
conversation made with access to index X). Each turn refreshes the TTL and the store keeps the last
`max_messages`; what goes into a prompt is trimmed further, oldest first, to `max_chars` (the share
of the model's context given to earlier turns; the retrieved passages and the answer need the rest).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from serving.config import HistoryConfig
from serving.errors import InvalidRequest, NotFound
from serving.generator.protocol import Message
from serving.stores.keys import ANY, Principal
from serving.stores.sqlite import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
  tenant TEXT NOT NULL, session_id TEXT NOT NULL, messages TEXT NOT NULL, expires REAL NOT NULL,
  PRIMARY KEY (tenant, session_id)
);
"""


class Session(BaseModel):
    id: str
    messages: list[Message]
    expires_at: float


class HistoryStore(Protocol):
    def load(self, tenant: str, session_id: str) -> Session | None: ...

    def append(self, tenant: str, session_id: str, messages: list[Message]) -> None: ...

    def delete(self, tenant: str, session_id: str) -> bool: ...


def trim(messages: list[Message], max_chars: int) -> list[Message]:
    """The latest messages whose text fits `max_chars`, never starting with an assistant turn."""
    kept, used = [], 0
    for message in reversed(messages):
        if used + len(message.content) > max_chars:
            break
        kept.append(message)
        used += len(message.content)
    kept.reverse()
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return kept


class SqliteHistory:
    def __init__(self, config: HistoryConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # injected by tests: expiry without waiting
        self._db = open_db(config.path, _SCHEMA)
        self._lock = threading.Lock()

    def load(self, tenant: str, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT messages, expires FROM sessions WHERE tenant = ? AND session_id = ? AND expires > ?",
                (tenant, session_id, self.clock()),
            ).fetchone()
        if row is None:
            return None
        return Session(id=session_id, messages=json.loads(row[0]), expires_at=row[1])

    def append(self, tenant: str, session_id: str, messages: list[Message]) -> None:
        """Read-modify-write in one IMMEDIATE transaction, so concurrent turns do not lose each other."""
        expires = self.clock() + self.config.ttl_s
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT messages FROM sessions WHERE tenant = ? AND session_id = ? AND expires > ?",
                    (tenant, session_id, self.clock()),
                ).fetchone()
                stored = [*(json.loads(row[0]) if row else []), *(m.model_dump() for m in messages)]
                self._db.execute(
                    "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
                    (tenant, session_id, json.dumps(stored[-self.config.max_messages :]), expires),
                )
                # expired conversations are deleted, not only hidden: their content must not outlive its TTL
                self._db.execute("DELETE FROM sessions WHERE expires <= ?", (self.clock(),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete(self, tenant: str, session_id: str) -> bool:
        with self._lock:
            done = self._db.execute("DELETE FROM sessions WHERE tenant = ? AND session_id = ?", (tenant, session_id))
        return done.rowcount > 0


class RedisHistory:
    """A Redis list per session; RPUSH + LTRIM + EXPIRE in one MULTI, so replicas never interleave halves."""

    def __init__(self, config: HistoryConfig) -> None:
        import redis

        self.config = config
        self._redis = redis.Redis.from_url(config.redis_url, decode_responses=True)

    @staticmethod
    def _key(tenant: str, session_id: str) -> str:
        return f"rayrag:session:{json.dumps([tenant, session_id])}"

    def load(self, tenant: str, session_id: str) -> Session | None:
        key = self._key(tenant, session_id)
        with self._redis.pipeline() as pipe:
            items, ttl_ms = pipe.lrange(key, 0, -1).pttl(key).execute()
        if not items:
            return None
        return Session(id=session_id, messages=[json.loads(i) for i in items], expires_at=time.time() + ttl_ms / 1000)

    def append(self, tenant: str, session_id: str, messages: list[Message]) -> None:
        key = self._key(tenant, session_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(m.model_dump_json() for m in messages))
            pipe.ltrim(key, -self.config.max_messages, -1)
            pipe.pexpire(key, int(self.config.ttl_s * 1000))
            pipe.execute()

    def delete(self, tenant: str, session_id: str) -> bool:
        return bool(self._redis.delete(self._key(tenant, session_id)))


def open_history(config: HistoryConfig) -> HistoryStore:
    return RedisHistory(config) if config.backend == "redis" else SqliteHistory(config)


def owner_of(who: Principal) -> str:
    """The namespace of a key's sessions: its tenant, narrowed by its index scope when it has one."""
    if ANY in who.indexes:
        return who.tenant
    return json.dumps([who.tenant, sorted(who.indexes)])


class Conversations:
    """The gateway's view of history: earlier turns into a request, the new turn into the store."""

    def __init__(self, config: HistoryConfig) -> None:
        self.config = config
        self.store: HistoryStore | None = open_history(config) if config.enabled else None

    def with_history(self, who: Principal, session_id: str | None, messages: list[Message]) -> list[Message]:
        """The request's turns after the session's earlier ones (trimmed to the history budget)."""
        if session_id is None:
            return messages
        if self.store is None:
            raise InvalidRequest("conversation history is turned off (serve.gateway.history)", param="session_id")
        session = self.store.load(owner_of(who), session_id)
        earlier = trim(session.messages, self.config.max_chars) if session else []
        return [*(m for m in messages if m.role == "system"), *earlier, *(m for m in messages if m.role != "system")]

    def save_turn(self, who: Principal, session_id: str | None, asked: list[Message], answer: str) -> None:
        if session_id is None or self.store is None:
            return
        said = [m for m in asked if m.role != "system"] + [Message(role="assistant", content=answer)]
        self.store.append(owner_of(who), session_id, said)

    def session(self, who: Principal, session_id: str) -> Session:
        """The key's session, or 404: another tenant's (or scope's) id and an unknown one answer alike."""
        session = self._store().load(owner_of(who), session_id)
        if session is None:
            raise _not_found(session_id)
        return session

    def forget(self, who: Principal, session_id: str) -> None:
        if not self._store().delete(owner_of(who), session_id):
            raise _not_found(session_id)

    def _store(self) -> HistoryStore:
        if self.store is None:
            raise NotFound(
                "conversation history is turned off (serve.gateway.history.enabled)", code="history_disabled"
            )
        return self.store


def _not_found(session_id: str) -> NotFound:
    return NotFound(f"no session {session_id!r}", param="session_id", code="session_not_found")
