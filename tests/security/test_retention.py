"""Nothing outlives its retention: expired conversations, old records, old spans and past counter
windows are deleted, and a failed download leaves nothing behind."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from serving.config import HistoryConfig
from serving.generator.protocol import Message
from serving.stores.counters import SqliteCounter
from serving.stores.history import SqliteHistory
from serving.stores.records import AnswerRecord, RecordStore
from serving.telemetry.tracing import expire_spans

pytestmark = pytest.mark.security


def rows(db, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_expired_conversations_are_deleted_not_only_hidden(tmp_path):
    history = SqliteHistory(HistoryConfig(path=tmp_path / "h.sqlite", ttl_s=1e-6))
    history.append("acme", "old", [Message(role="user", content="my card is 4111 1111 1111 1111")])
    history.config = HistoryConfig(path=tmp_path / "h.sqlite")  # the next turn with the usual TTL
    history.append("acme", "new", [Message(role="user", content="hello")])
    stored = [sid for (sid,) in history._db.execute("SELECT session_id FROM sessions")]
    assert stored == ["new"]


def test_records_older_than_their_retention_are_deleted(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite", retention_days=1)
    old = AnswerRecord(request_id="req-old", tenant="t", key_id="k", endpoint="chat", model="m", backend="b",
                       created=time.time() - 2 * 86_400)  # fmt: skip
    store.save(old)
    store.save(old.model_copy(update={"request_id": "req-new", "created": time.time()}))
    assert [r["request_id"] for r in store.export(with_feedback_only=False)] == ["req-new"]


def test_spans_older_than_their_retention_are_dropped(tmp_path):
    path = tmp_path / "traces.jsonl"
    now = datetime.now(UTC)
    spans = [{"name": "old", "end_time": (now - timedelta(days=9)).isoformat()},
             {"name": "new", "end_time": now.isoformat()}]  # fmt: skip
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    assert expire_spans(path, retention_days=7) == 1
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["new"]


def test_past_counter_windows_do_not_pile_up(tmp_path):
    counter = SqliteCounter(tmp_path / "c.sqlite")
    counter._db.execute("INSERT INTO counters VALUES ('rpm:k:1', 5, ?)", (time.time() - 1,))
    counter.add("rpm:k:2", 1, ttl_s=120)
    assert [k for (k,) in counter._db.execute("SELECT key FROM counters")] == ["rpm:k:2"]


def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import pyarrow.fs

    from indexes.layout import IndexDirectory
    from indexes.manifest import MANIFEST_FILE
    from indexes.storage import RemoteIndexes

    directory = IndexDirectory(tmp_path / "remote", "docs")
    version, partial = directory.begin_version()
    (partial / MANIFEST_FILE).write_text("{}")
    directory.publish(version, partial)

    def broken(*_args, **_kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(pyarrow.fs, "copy_files", broken)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="connection reset"):
        RemoteIndexes(f"file://{tmp_path / 'remote'}").download("docs", version, cache / "docs" / version)
    assert not any(cache.rglob("*.partial"))
