"""Conversation history, one contract for the SQLite and the Redis store (a real redis-server)."""

from __future__ import annotations

import threading
import time

import pytest

from serving.config import HistoryConfig
from serving.generator.protocol import Message
from serving.stores.history import RedisHistory, SqliteHistory, trim

pytestmark = pytest.mark.unit


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Opens the test's store; each call is a new instance over the same data (like a restart)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        import redis

        redis.Redis.from_url(url).flushdb()
        return lambda **settings: RedisHistory(HistoryConfig(backend="redis", redis_url=url, **settings))
    return lambda **settings: SqliteHistory(HistoryConfig(path=tmp_path / "history.sqlite", **settings))


def turn(question: str, answer: str) -> list[Message]:
    return [Message(role="user", content=question), Message(role="assistant", content=answer)]


def test_turns_accumulate_and_survive_a_new_store_instance(make_store):
    store = make_store()
    store.append("acme", "s1", turn("hi", "hello"))
    store.append("acme", "s1", turn("what are tides?", "the rise and fall of the sea"))
    restarted = make_store()  # a gateway restart: a new process opening the same store
    session = restarted.load("acme", "s1")
    assert [m.content for m in session.messages] == ["hi", "hello", "what are tides?", "the rise and fall of the sea"]
    assert session.expires_at > time.time()


def test_sessions_belong_to_their_tenant(make_store):
    store = make_store()
    store.append("acme", "s1", turn("secret", "kept"))
    assert store.load("other", "s1") is None
    assert not store.delete("other", "s1")
    assert store.delete("acme", "s1") and store.load("acme", "s1") is None


def test_sqlite_sessions_expire_after_their_ttl(tmp_path):
    now = [1_000.0]
    store = SqliteHistory(HistoryConfig(path=tmp_path / "h.sqlite", ttl_s=60), clock=lambda: now[0])
    store.append("acme", "s1", turn("hi", "hello"))
    now[0] += 59
    assert store.load("acme", "s1") is not None
    now[0] += 2  # past the TTL: an injected clock, no waiting
    assert store.load("acme", "s1") is None


def test_redis_sessions_carry_their_ttl(redis_url):
    """Redis expires the key itself; what the store controls is that every turn sets the TTL."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    store = RedisHistory(HistoryConfig(backend="redis", redis_url=redis_url, ttl_s=60))
    store.append("acme", "s1", turn("hi", "hello"))
    ttl_ms = redis.Redis.from_url(redis_url).pttl(RedisHistory._key("acme", "s1"))
    assert 0 < ttl_ms <= 60_000


def test_the_store_keeps_the_last_messages_only(make_store):
    store = make_store(max_messages=4)
    for i in range(5):
        store.append("acme", "s1", turn(f"q{i}", f"a{i}"))
    assert [m.content for m in store.load("acme", "s1").messages] == ["q3", "a3", "q4", "a4"]


def test_concurrent_turns_are_all_kept(make_store):
    store = make_store(max_messages=1000)
    threads = [threading.Thread(target=store.append, args=("acme", "s1", turn(f"q{i}", f"a{i}"))) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.load("acme", "s1").messages) == 40


def test_trim_keeps_the_latest_whole_turns_within_the_budget():
    history = turn("a" * 50, "b" * 50) + turn("c" * 30, "d" * 30)
    assert [m.content[0] for m in trim(history, 1000)] == ["a", "b", "c", "d"]
    assert [m.content[0] for m in trim(history, 70)] == ["c", "d"]
    assert [m.content[0] for m in trim(history, 40)] == []  # never starts with an assistant turn
