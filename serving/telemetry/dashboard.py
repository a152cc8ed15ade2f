"""The Grafana dashboard of the platform, built from the metric names this code records.

`python -m serving.telemetry.dashboard > configs/grafana/rayrag.json` writes it; a unit test checks the
committed file is what this builds, so a renamed metric cannot leave a dead panel behind. Queries
use Ray's exported names (`ray_` prefix, `_total` on counters) plus Serve's own `ray_serve_*` series.
"""

from __future__ import annotations

import json
import sys
from typing import Any

P = "ray_rayrag_"


def rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({P}{metric}_total[5m]))"


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({P}{metric}_bucket[5m])))"


PANELS: list[tuple[str, str, list[str]]] = [
    ("Requests/s by endpoint and status", "reqps", [rate("requests", "endpoint, status")]),
    ("Request latency p50 / p95 by endpoint", "s",
     [quantile(0.5, "request_seconds", "endpoint"), quantile(0.95, "request_seconds", "endpoint")]),
    ("Stage latency p95 (embed_query, retrieve, rerank, generate, grade)", "s",
     [quantile(0.95, "stage_seconds", "stage")]),
    ("Time to first token p50 / p95 by backend", "s",
     [quantile(0.5, "time_to_first_token_seconds", "backend"), quantile(0.95, "time_to_first_token_seconds", "backend")]),
    ("Tokens/s per answer p50 by backend", "none", [quantile(0.5, "tokens_per_second", "backend")]),
    ("Tokens/s by kind, key and model", "none", [rate("tokens", "kind, key_id, model")]),
    ("Spend/s by key and model", "currencyUSD", [rate("cost", "key_id, model")]),
    ("Errors/s by type", "reqps", [rate("errors", "type, endpoint")]),
    ("Fallback chain: steps skipped or failed/s", "reqps", [rate("fallbacks", "step, outcome")]),
    ("Semantic cache hit ratio", "percentunit",
     [f"sum(rate({P}cache_lookups_total{{result=\"hit\"}}[5m])) / sum(rate({P}cache_lookups_total[5m]))"]),
    ("In flight per chain step, queued per deployment", "none",
     [f"sum by (step) ({P}in_flight)", "sum by (deployment) (ray_serve_deployment_queued_queries)"]),
    ("Index version served", "none", [f"max by (index, version) ({P}index_version_info) == 1"]),
    ("Query out-of-distribution distance p50 / p95", "none",
     [quantile(0.5, "query_ood_distance", "index"), quantile(0.95, "query_ood_distance", "index")]),
    ("Feedback and grader verdicts/s", "none", [rate("feedback", "rating"), rate("grader_verdicts", "grader, verdict")]),
    ("Guardrail blocks and credit alerts/s", "none",
     [rate("guardrail_blocks", "stage, category"), rate("credit_alerts", "key_id, threshold")]),
    ("Index jobs: documents and chunks", "none", [rate("index_documents", "index, outcome"), rate("index_chunks", "index, change")]),
    ("Index job seconds p50", "s", [quantile(0.5, "index_job_seconds", "index")]),
]  # fmt: skip


def panel(n: int, title: str, unit: str, queries: list[str]) -> dict[str, Any]:
    return {
        "id": n + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + i), "expr": q} for i, q in enumerate(queries)],
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "rayrag",
        "uid": "rayrag",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": [panel(n, *spec) for n, spec in enumerate(PANELS)],
    }


if __name__ == "__main__":
    json.dump(dashboard(), sys.stdout, indent=1)
    sys.stdout.write("\n")
