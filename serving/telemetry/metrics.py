"""The serving app's metrics, on Ray's metrics pipeline (`ray.util.metrics`).

One choice for every process: replicas of different deployments (gateway, retriever, router,
generators) run in different processes on different nodes, and Ray's per-node metrics agent already
collects what each of them records and exports it for Prometheus on the metrics export port, next to
Serve's own `ray_serve_*` series (per-deployment request counts, latencies and queued requests).
Exported names get Ray's `ray_` prefix: `rayrag_requests` here is `ray_rayrag_requests_total` there.

Metric objects are created on first use, inside the process that records them (a Ray worker).
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
RATE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
DISTANCE = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0]


def add(counter: Counter, value: float, tags: dict[str, str]) -> None:
    """`Counter.inc` refuses 0 (no context tokens, an unpriced model): nothing to record then."""
    if value > 0:
        counter.inc(value, tags)


@cache
def requests() -> Counter:
    return Counter("rayrag_requests", "HTTP requests by endpoint and status", ("endpoint", "status"))


@cache
def request_seconds() -> Histogram:
    return Histogram("rayrag_request_seconds", "Request latency by endpoint", LATENCY_S, ("endpoint",))


@cache
def stage_seconds() -> Histogram:
    return Histogram(
        "rayrag_stage_seconds", "Time per stage: embed_query, retrieve, rerank, generate, grade", LATENCY_S, ("stage",)
    )


@cache
def ttft_seconds() -> Histogram:
    return Histogram("rayrag_time_to_first_token_seconds", "Time to the first streamed token", LATENCY_S, ("backend",))


@cache
def tokens_per_second() -> Histogram:
    return Histogram("rayrag_tokens_per_second", "Completion tokens per second of an answer", RATE, ("backend",))


@cache
def tokens() -> Counter:
    return Counter(
        "rayrag_tokens", "Tokens by kind (prompt, context, completion), key and model", ("kind", "key_id", "model")
    )


@cache
def spend() -> Counter:
    return Counter("rayrag_cost", "Spend at the configured prices, by key and model", ("key_id", "model"))


@cache
def errors() -> Counter:
    return Counter("rayrag_errors", "Errors by type and endpoint", ("type", "endpoint"))


@cache
def fallbacks() -> Counter:
    return Counter("rayrag_fallbacks", "Chain steps skipped or failed before another answered", ("step", "outcome"))


@cache
def cache_lookups() -> Counter:
    return Counter("rayrag_cache_lookups", "Semantic cache lookups by result (hit, miss)", ("result",))


@cache
def in_flight() -> Gauge:
    return Gauge("rayrag_in_flight", "Requests in flight to each step of the chain", ("step",))


@cache
def index_version() -> Gauge:
    return Gauge("rayrag_index_version_info", "1 for the index version each retriever serves", ("index", "version"))


@cache
def query_distance() -> Histogram:
    return Histogram(
        "rayrag_query_ood_distance",
        "Out-of-distribution score: 1 - cosine of the query to its nearest chunk (drift shows as mass moving right)",
        DISTANCE,
        ("index",),
    )


@cache
def index_refusals() -> Counter:
    return Counter("rayrag_index_refusals", "Index versions refused: files differ from their manifest", ("index",))


@cache
def feedback() -> Counter:
    return Counter("rayrag_feedback", "Feedback ratings", ("rating",))


@cache
def verdicts() -> Counter:
    return Counter("rayrag_grader_verdicts", "Grader verdicts", ("grader", "verdict"))


@cache
def guardrail_blocks() -> Counter:
    return Counter("rayrag_guardrail_blocks", "Requests or answers stopped by a guardrail", ("stage", "category"))


@cache
def credit_alerts() -> Counter:
    return Counter("rayrag_credit_alerts", "Credit budget thresholds crossed", ("key_id", "threshold"))
