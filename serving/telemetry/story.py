"""One request's story from the trace file: its spans as a tree, with durations and attributes.

The JSONL file holds OpenTelemetry's JSON form of each span (serving/telemetry/tracing.py). A
request is found by the `rayrag.request_id` attribute of its root span; its trace id then gathers
every span of it. Reads the file line by line: it only grows, and one request's spans are few.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


class TraceNotFound(LookupError):
    """No span of that request id in the trace file."""


def spans_of(path: Path, request_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        raise TraceNotFound(f"no trace file at {path} (serve.gateway.telemetry.traces_path)")
    spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    roots = [s for s in spans if s.get("attributes", {}).get("rayrag.request_id") == request_id]
    if not roots:
        raise TraceNotFound(f"no trace of request {request_id!r} in {path}")
    trace_id = roots[-1]["context"]["trace_id"]
    return [s for s in spans if s["context"]["trace_id"] == trace_id]


def _ms(span: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))
    return (end - start).total_seconds() * 1000


def render(spans: list[dict[str, Any]]) -> str:
    """An indented tree, children in start order, each line `name  12.3 ms  key=value …`."""
    children: dict[str | None, list[dict]] = {}
    ids = {s["context"]["span_id"] for s in spans}
    for span in sorted(spans, key=lambda s: s["start_time"]):
        parent = span.get("parent_id") if span.get("parent_id") in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            attributes = " ".join(f"{k.removeprefix('rayrag.')}={v}" for k, v in sorted(span["attributes"].items()))
            lines.append(f"{'  ' * depth}{span['name']}  {_ms(span):.1f} ms  {attributes}".rstrip())
            walk(span["context"]["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)
