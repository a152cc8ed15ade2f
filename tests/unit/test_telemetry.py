"""The dashboard is built from the metric names the code records; traces tell a request's story."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from rayrag.cli import app
from serving.config import Price, TelemetryConfig
from serving.generator.protocol import Usage
from serving.telemetry.dashboard import dashboard
from serving.telemetry.story import TraceNotFound, render, spans_of
from serving.telemetry.tracing import build_provider, cost, setup_tracing, stage, tracer
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def recorded_names() -> set[str]:
    """Every metric name created in the code, as Ray exports it (prefix, _total on counters)."""
    names = set()
    for path in [*(REPO / "serving" / "telemetry").glob("*.py"), REPO / "pipelines" / "metrics.py"]:
        for kind, name in re.findall(r'(Counter|Gauge|Histogram)\(\s*"(rayrag_\w+)"', path.read_text()):
            names |= {f"ray_{name}_total"} if kind == "Counter" else {f"ray_{name}", f"ray_{name}_bucket"}
    return names


def test_the_committed_dashboard_is_the_built_one_and_every_query_names_a_recorded_metric():
    committed = json.loads((REPO / "configs" / "grafana" / "rayrag.json").read_text())
    assert committed == dashboard()
    queried = {m for p in committed["panels"] for t in p["targets"] for m in re.findall(r"ray_rayrag_\w+", t["expr"])}
    assert queried and queried <= recorded_names()


def test_cost_uses_the_models_price_or_the_wildcard():
    usage = Usage(prompt_tokens=2000, completion_tokens=500)
    config = TelemetryConfig(prices={"m": Price(prompt_per_1k=0.5, completion_per_1k=2.0), "*": Price(prompt_per_1k=1)})
    assert cost(usage, "m", config) == pytest.approx(2.0)
    assert cost(usage, "other", config) == pytest.approx(2.0)
    assert cost(usage, "m", TelemetryConfig()) == 0.0


def test_a_request_trace_is_written_as_jsonl_and_rendered_as_a_tree(tmp_path):
    path = tmp_path / "traces.jsonl"
    setup_tracing(TelemetryConfig(traces_path=path), "test")
    with tracer().start_as_current_span("POST /v1/query", attributes={"rayrag.request_id": "req-1"}):
        with stage("retrieve", **{"rayrag.index": "docs"}):
            pass
        with stage("generate"):
            pass
    spans = spans_of(path, "req-1")
    assert [s["name"] for s in spans] == ["retrieve", "generate", "POST /v1/query"]
    lines = render(spans).splitlines()
    assert lines[0].startswith("POST /v1/query") and lines[1].startswith("  retrieve") and "index=docs" in lines[1]
    with pytest.raises(TraceNotFound, match="req-2"):
        spans_of(path, "req-2")


def test_spans_go_to_an_otlp_endpoint_when_one_is_configured(post_sink):
    url, received = post_sink
    provider = build_provider(TelemetryConfig(otlp_endpoint=f"{url}/v1/traces"), "test")
    with provider.get_tracer("t").start_as_current_span("POST /v1/query"):
        pass
    assert provider.force_flush(10_000)
    assert [(r.path, r.content_type) for r in received] == [("/v1/traces", "application/x-protobuf")]


def test_rayrag_trace_prints_the_story_and_names_a_missing_request(tmp_path):
    path = tmp_path / "traces.jsonl"
    span = {"name": "POST /v1/query", "context": {"trace_id": "0x1", "span_id": "0xa"}, "parent_id": None,
            "start_time": "2026-11-23T10:00:00.000000Z", "end_time": "2026-11-23T10:00:00.250000Z",
            "attributes": {"rayrag.request_id": "req-9", "rayrag.cost": 0.002}}  # fmt: skip
    path.write_text(json.dumps(span) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"serve:\n  gateway:\n    telemetry:\n      traces_path: {path}\n")
    result = CliRunner().invoke(app, ["trace", "req-9", "--config", str(config)])
    assert result.exit_code == 0 and "POST /v1/query  250.0 ms  cost=0.002" in result.output
    missing = CliRunner().invoke(app, ["trace", "req-0", "--config", str(config)])
    assert missing.exit_code == 2 and "req-0" in missing.output


def test_the_platforms_own_polls_are_logged_at_debug_only():
    import logging

    from serving.telemetry.quiet import QuietPolls

    quiet = QuietPolls()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray.serve.test-quiet", logging.INFO, __file__, 1, msg, None, None)

    logging.getLogger("ray.serve.test-quiet").setLevel(logging.INFO)
    poll, call = record("CALL status OK 0.4ms"), record("CALL generate OK 812.0ms")
    assert not quiet.filter(poll) and poll.levelname == "DEBUG"
    assert quiet.filter(call) and call.levelname == "INFO"
    logging.getLogger("ray.serve.test-quiet").setLevel(logging.DEBUG)
    assert quiet.filter(record("CALL status OK 0.4ms"))


def test_the_edge_labels_each_request_by_its_route_template_and_traces_it(monkeypatch):
    """The request context (serving/edge.py) sees the route the router matched, after the endpoint ran:
    a metric label per template, not per id, and a root span that carries it and the status."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from serving import edge

    observed = []
    monkeypatch.setattr(edge, "observe_request", lambda request, status, seconds: observed.append(
        (edge.endpoint_of(request), status)))  # fmt: skip
    spans, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(edge, "tracer", lambda: provider.get_tracer("test"))
    app = FastAPI()
    edge.install(app, max_body_bytes=1024)

    @app.get("/v1/records/{request_id}")
    async def record(request_id: str) -> dict:
        return {"id": request_id}

    @app.get("/fails")
    async def fails() -> dict:
        raise edge.PayloadTooLarge("too big", param="body")

    client = TestClient(app)
    failed = client.get("/fails")  # the error body sets the id header itself: it is sent once
    assert failed.headers.get_list(edge.REQUEST_ID_HEADER) == [failed.json()["error"]["request_id"]]
    observed.clear()
    reply = client.get("/v1/records/req-abc", headers={"x-request-id": "mine"})
    rid = reply.headers[edge.REQUEST_ID_HEADER]
    assert reply.status_code == 200 and rid.startswith("req-") and rid != "mine"
    assert observed == [("/v1/records/{request_id}", 200)]
    root = spans.get_finished_spans()[-1]
    assert root.name == "GET /v1/records/req-abc" and root.attributes["rayrag.request_id"] == rid
    assert root.attributes["http.route"] == "/v1/records/{request_id}"
    assert root.attributes["http.status_code"] == 200 and root.attributes["rayrag.client_request_id"] == "mine"
