"""OpenTelemetry traces of every request: one root span per HTTP request (opened at the edge) and a
child span per stage (embed query, retrieve, generate, grade), each stage also timed in the
`rayrag_stage_seconds` histogram.

Spans go to an OTLP endpoint when one is configured, else to a local JSONL file (one span per line,
OpenTelemetry's own JSON form, written by its `ConsoleSpanExporter` into the file), which is what
`rayrag trace REQUEST_ID` reads. The root span carries the request id, key id, prompt version,
model, index version, chunk ids, token counts and the cost from the configured price table. API keys
and prompts are never span attributes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from serving.config import TelemetryConfig
from serving.generator.protocol import Usage
from serving.telemetry import metrics

_LOCK = threading.Lock()
_CONFIGURED: dict[str, Any] = {}
TRACER = "rayrag"


def setup_tracing(config: TelemetryConfig, service: str) -> None:
    """Install this process's tracer provider once (a replica process hosts one deployment)."""
    with _LOCK:
        if _CONFIGURED or not config.tracing:
            return
        _CONFIGURED["provider"] = provider = build_provider(config, service)
        trace.set_tracer_provider(provider)


def build_provider(config: TelemetryConfig, service: str) -> TracerProvider:
    """A provider exporting with OTLP/HTTP when an endpoint is configured, else to the JSONL file."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
        return provider
    config.traces_path.parent.mkdir(parents=True, exist_ok=True)
    expire_spans(config.traces_path, config.traces_retention_days)
    out = config.traces_path.open("a", buffering=1)  # line-buffered: one span per line, readable at once
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def expire_spans(path: Path, retention_days: float) -> int:
    """Drop spans that ended more than `retention_days` ago (rewritten beside, then renamed); how many."""
    if not path.exists():
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            ended = datetime.fromisoformat(json.loads(line)["end_time"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            dropped += 1  # a line that is not a span is not kept either
            continue
        if ended < cutoff:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        fresh = path.with_suffix(".tmp")
        fresh.write_text("".join(f"{line}\n" for line in kept))
        os.replace(fresh, path)
    return dropped


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


@contextmanager
def stage(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of the current request and one `rayrag_stage_seconds` observation."""
    started = time.perf_counter()
    with tracer().start_as_current_span(name, attributes=_clean(attributes)) as span:
        try:
            yield span
        finally:
            metrics.stage_seconds().observe(time.perf_counter() - started, {"stage": name})


def annotate(**attributes: Any) -> None:
    """Attributes on the current span: called outside any `stage`, that is the request's root span
    (opened at the edge, whose context the route handler inherits)."""
    trace.get_current_span().set_attributes(_clean(attributes))


def cost(usage: Usage, model: str, config: TelemetryConfig) -> float:
    """What the tokens cost at the configured price per 1k tokens of this model (0 when unpriced)."""
    price = config.prices.get(model) or config.prices.get("*")
    if price is None:
        return 0.0
    return usage.prompt_tokens / 1000 * price.prompt_per_1k + usage.completion_tokens / 1000 * price.completion_per_1k


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str/bool/int/float and lists of them; None values are dropped."""
    return {k: v for k, v in attributes.items() if v is not None}
