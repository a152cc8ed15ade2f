"""Per-key rate limits (requests and tokens per minute) and a credit budget with alerts.

Fixed one-minute windows: a request increments the window's request counter and is refused when
the new total is over the limit, so exactly `limit` requests pass per window however many race.
Tokens (prompt, which includes the retrieved context, + completion) are charged after the answer;
a key already at its token limit is refused before any work. Credits are tokens over the key's
lifetime; every threshold crossing is detected from the atomic increment's before/after values,
so each alert fires once even across replicas: a log line, a Prometheus counter, an optional webhook.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx

from serving.config import QuotaConfig
from serving.errors import ServingError
from serving.stores.counters import Counter, RedisCounter, SqliteCounter
from serving.stores.keys import Principal
from serving.telemetry import metrics

log = logging.getLogger(__name__)
WINDOW_S = 60


class RateLimited(ServingError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int = 1, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def __reduce__(self):
        return (RateLimited, (self.message, self.retry_after))


class CreditsExhausted(RateLimited):
    code = "insufficient_quota"


def make_counter(config: QuotaConfig) -> Counter:
    return RedisCounter(config.redis_url) if config.backend == "redis" else SqliteCounter(config.sqlite_path)


class Quotas:
    def __init__(self, config: QuotaConfig, counter: Counter | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        self.counter = counter or make_counter(config)
        self.clock = clock

    def _window(self) -> tuple[int, int]:
        now = self.clock()
        return int(now // WINDOW_S), max(1, int(WINDOW_S - now % WINDOW_S))

    def admit(self, who: Principal) -> None:
        """Count this request; refuse it (429, Retry-After) if any limit is already reached."""
        if not self.config.enabled:
            return
        window, retry_after = self._window()
        rpm = who.limits.requests_per_minute or self.config.requests_per_minute
        tpm = who.limits.tokens_per_minute or self.config.tokens_per_minute
        budget = who.limits.credit_budget or self.config.credit_budget
        if budget is not None and self.counter.get(f"spent:{who.key_id}") >= budget:
            raise CreditsExhausted(f"credit budget of {budget} tokens is spent", retry_after=86400)
        if self.counter.get(f"tpm:{who.key_id}:{window}") >= tpm:
            raise RateLimited(f"over {tpm} tokens per minute", retry_after=retry_after)
        if self.counter.add(f"rpm:{who.key_id}:{window}", 1, ttl_s=2 * WINDOW_S) > rpm:
            raise RateLimited(f"over {rpm} requests per minute", retry_after=retry_after)

    def charge(self, who: Principal, tokens: int) -> None:
        """Add what an answer cost to the minute's tokens and the lifetime spend; alert on crossings."""
        if not self.config.enabled or tokens <= 0:
            return
        window, _ = self._window()
        self.counter.add(f"tpm:{who.key_id}:{window}", tokens, ttl_s=2 * WINDOW_S)
        after = self.counter.add(f"spent:{who.key_id}", tokens)
        budget = who.limits.credit_budget or self.config.credit_budget
        if budget is None:
            return
        for threshold in self.config.alert_thresholds:
            if after - tokens < threshold * budget <= after:
                self._alert(who, threshold, after, budget)

    def _alert(self, who: Principal, threshold: float, spent: int, budget: int) -> None:
        log.warning("credit alert: key %s (tenant %s) spent %d of %d tokens (%d%%)", who.key_id, who.tenant, spent,
                    budget, round(threshold * 100))  # fmt: skip
        metrics.credit_alerts().inc(1, {"key_id": who.key_id, "threshold": str(threshold)})
        if self.config.webhook_url:
            body = {
                "tenant": who.tenant,
                "key_id": who.key_id,
                "threshold": threshold,
                "spent": spent,
                "budget": budget,
            }
            threading.Thread(target=_post, args=(self.config.webhook_url, body), daemon=True).start()


def _post(url: str, body: dict) -> None:
    try:
        httpx.post(url, json=body, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        log.error("credit alert webhook %s failed: %r", url, exc)
