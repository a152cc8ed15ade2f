"""The explanation record of every answer, and the feedback users leave on it, in SQLite.

One row per request id, made by the server (a client's id is a correlation field only, so one
tenant can neither overwrite nor erase another's record): who asked (tenant, key), what answered (model, backend), with which prompt
version and index version, the chunks used with their scores, and token usage. Feedback is stored
on the same row, so `rayrag feedback export` yields evaluation data with its full context. A tenant
only ever sees its own records (another tenant's id is simply not found).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from serving.errors import NotFound
from serving.generator.protocol import ClientText
from serving.stores.sqlite import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  request_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL, record TEXT NOT NULL, feedback TEXT
);
CREATE INDEX IF NOT EXISTS records_created ON records (created);
"""


class AnswerRecord(BaseModel):
    request_id: str  # made by the server (serving/edge.py): the key of the record
    client_request_id: str | None = None  # the client's own id, for correlation only
    tenant: str
    key_id: str
    endpoint: str
    model: str
    backend: str
    prompt: str | None = None
    index: str | None = None
    index_version: str | None = None
    chunks: list[dict[str, Any]] = Field(default_factory=list)  # chunk_id, source, score
    usage: dict[str, int] = Field(default_factory=dict)
    finish_reasons: list[str | None] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list)  # the fallback chain's path to the answer
    grades: dict[str, Any] | None = None  # grader verdicts, whether the answer was regenerated
    session_id: str | None = None
    # the shape of what the generator was given: each message's role and length (not its text, which
    # may hold personal data): shows which earlier turns and passages went into the prompt
    messages: list[dict[str, Any]] = Field(default_factory=list)
    cache: dict[str, Any] | None = None  # set when the answer came from the semantic cache
    created: float = Field(default_factory=time.time)


class Feedback(ClientText):
    request_id: str
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=4000)


class RecordStore:
    def __init__(self, path: Path, retention_days: float = 30.0) -> None:
        self._db = open_db(path, _SCHEMA)
        self._lock = threading.Lock()
        self.retention_s = retention_days * 86_400

    def save(self, record: AnswerRecord) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE created < ?", (time.time() - self.retention_s,))
            self._db.execute(
                "INSERT INTO records (request_id, tenant, created, record) VALUES (?, ?, ?, ?)",  # never replaced
                (record.request_id, record.tenant, record.created, record.model_dump_json()),
            )

    def get(self, request_id: str, tenant: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT record, feedback FROM records WHERE request_id = ? AND tenant = ?", (request_id, tenant)
            ).fetchone()
        if row is None:
            raise NotFound(f"no answer with request id {request_id!r}", param="request_id", code="record_not_found")
        return json.loads(row[0]) | {"feedback": json.loads(row[1]) if row[1] else None}

    def add_feedback(self, feedback: Feedback, tenant: str) -> None:
        self.get(feedback.request_id, tenant)  # 404 for unknown ids and other tenants' ids alike
        payload = feedback.model_dump_json(exclude={"request_id"})
        with self._lock:
            self._db.execute(
                "UPDATE records SET feedback = ? WHERE request_id = ? AND tenant = ?",
                (payload, feedback.request_id, tenant),
            )

    def export(self, with_feedback_only: bool = True) -> Iterator[dict[str, Any]]:
        query = "SELECT record, feedback FROM records" + (" WHERE feedback IS NOT NULL" if with_feedback_only else "")
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created").fetchall()
        for record, feedback in rows:
            yield json.loads(record) | {"feedback": json.loads(feedback) if feedback else None}
