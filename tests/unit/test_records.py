"""Answer records and feedback: tenant isolation and the `rayrag feedback export` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from serving.errors import NotFound
from serving.stores.records import AnswerRecord, Feedback, RecordStore
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def record(rid: str, tenant: str) -> AnswerRecord:
    return AnswerRecord(request_id=rid, tenant=tenant, key_id="k", endpoint="chat", model="m", backend="llama_cpp",
                        prompt="rag_answer@1", chunks=[{"chunk_id": "c1", "source": "a.md", "score": 0.9}])  # fmt: skip


def test_records_are_per_tenant_and_carry_feedback(tmp_path):
    store = RecordStore(tmp_path / "records.sqlite")
    store.save(record("r1", "acme"))
    store.save(record("r2", "other"))
    assert store.get("r1", "acme")["chunks"][0]["source"] == "a.md"
    with pytest.raises(NotFound):
        store.get("r1", "other")
    with pytest.raises(NotFound):
        store.add_feedback(Feedback(request_id="r2", rating="up"), "acme")
    store.add_feedback(Feedback(request_id="r1", rating="up", comment="great"), "acme")
    assert [r["request_id"] for r in store.export()] == ["r1"] and len(list(store.export(False))) == 2


def test_feedback_export_cli_writes_jsonl(tmp_path):
    store = RecordStore(tmp_path / "records.sqlite")
    store.save(record("r1", "acme"))
    store.add_feedback(Feedback(request_id="r1", rating="down"), "acme")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"serve": {"gateway": {"records": {"path": str(tmp_path / "records.sqlite")}}}}))
    out = tmp_path / "feedback.jsonl"
    args = [sys.executable, "-m", "rayrag", "feedback", "export", "--config", str(config), "--out", str(out)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["feedback"]["rating"] == "down" and rows[0]["prompt"] == "rag_answer@1"
