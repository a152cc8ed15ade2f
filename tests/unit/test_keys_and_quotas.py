"""API keys, authorization and quotas against real SQLite and a real Redis server."""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.checks.auth import Authenticator, Forbidden, Unauthorized
from serving.config import AuthConfig, QuotaConfig
from serving.stores.counters import RedisCounter, SqliteCounter
from serving.stores.keys import KeyLimits, KeyStore, Principal
from serving.stores.quotas import CreditsExhausted, Quotas, RateLimited

pytestmark = pytest.mark.unit


def test_keys_are_stored_hashed_and_can_be_revoked(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    key, principal = store.create("acme", ["docs"], ["*"])
    assert store.lookup(key).tenant == "acme" and store.lookup(key).may_use_index("docs")
    dump = "\n".join(str(row) for row in sqlite3.connect(tmp_path / "keys.sqlite").execute("SELECT * FROM keys"))
    assert key.split("_", 2)[2] not in dump
    assert store.lookup(key[:-1] + ("x" if key[-1] != "x" else "y")) is None and store.lookup("nonsense") is None
    assert store.revoke(principal.key_id) and not store.revoke(principal.key_id)
    assert store.lookup(key) is None and store.list()[0].revoked


def test_authentication_and_scopes(tmp_path, monkeypatch):
    store = KeyStore(tmp_path / "keys.sqlite")
    key, _ = store.create("acme", ["docs"], ["small"])
    monkeypatch.setenv("RAYRAG_API_KEY", "single-user-secret")
    auth = Authenticator(AuthConfig(enabled=True, store=tmp_path / "keys.sqlite"), store)
    for header in (None, "Bearer ", "Basic abc", "Bearer rr_nope_nope"):
        with pytest.raises(Unauthorized):
            auth.authenticate(header)
    who = auth.authenticate(f"Bearer {key}")
    auth.check_index(who, "docs")
    for index in ("other-tenants-index", "no-such-index"):  # the same answer either way
        with pytest.raises(Forbidden, match="may not use index"):
            auth.check_index(who, index)
    with pytest.raises(Forbidden):
        auth.check_model(who, "big")
    assert auth.authenticate("Bearer single-user-secret").key_id == "env"
    assert Authenticator(AuthConfig()).authenticate(None).key_id == "anonymous"


@pytest.fixture(params=["sqlite", "redis"])
def counter(request, tmp_path):
    if request.param == "sqlite":
        return lambda: SqliteCounter(tmp_path / "quotas.sqlite")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisCounter(url, prefix=f"test-{tmp_path.name}:")


def test_counters_are_exact_under_concurrency(counter):
    counters = [counter() for _ in range(8)]  # separate connections, like separate replicas

    def bump(i: int) -> int:
        return counters[i % 8].add("hits", 3, ttl_s=60)

    with ThreadPoolExecutor(16) as pool:
        totals = list(pool.map(bump, range(50)))
    assert sorted(totals) == [3 * n for n in range(1, 51)]
    assert counters[0].get("hits") == 150 and counters[0].get("missing") == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_040.0  # 20 s into a minute

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_admit_exactly_the_limit(counter):
    clock = Clock()
    quotas = [Quotas(QuotaConfig(enabled=True, requests_per_minute=20), counter(), clock) for _ in range(4)]
    principal = Principal(key_id="k1", tenant="t")

    def one(i: int) -> int | None:
        try:
            quotas[i % 4].admit(principal)
            return None
        except RateLimited as exc:
            return exc.retry_after

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(50)))
    assert results.count(None) == 20
    assert {r for r in results if r is not None} == {40}  # seconds left in the minute
    clock.now += 60
    quotas[0].admit(principal)  # a new window


def test_tokens_per_minute_and_credit_budget_with_alerts_once(counter, caplog, post_sink):
    url, received = post_sink
    config = QuotaConfig(enabled=True, tokens_per_minute=1000, credit_budget=100, webhook_url=f"{url}/alert")
    quotas = Quotas(config, counter(), Clock())
    who = Principal(key_id=f"k-{id(quotas)}", tenant="acme", limits=KeyLimits(tokens_per_minute=50))
    quotas.admit(who)
    quotas.charge(who, 60)  # over the key's own tokens/minute
    with pytest.raises(RateLimited, match="tokens per minute"):
        quotas.admit(who)
    quotas.clock.now += 60
    quotas.charge(who, 25)  # 85 of 100: the 80 % alert
    quotas.charge(who, 5)  # no new crossing
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: quotas.charge(who, 5), range(4)))  # 110: the 100 % alert, once
    with pytest.raises(CreditsExhausted):
        quotas.admit(who)
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("credit alert")]
    assert [a.rsplit("(", 1)[1] for a in alerts] == ["80%)", "100%)"]  # each crossing once (metric: tests/integration)
    for _ in range(50):
        if len(received) >= 2:
            break
        threading.Event().wait(0.1)
    assert sorted(json.loads(r.body)["threshold"] for r in received) == [0.8, 1.0]
