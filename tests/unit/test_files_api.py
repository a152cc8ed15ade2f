"""Documents in over HTTP, against the gateway's real app with Ray's job API faked: uploads owned by
a tenant, bounded in size and per key, added to and taken out of an index's sources by keys with its
ingest scope, and one index job at a time whose report names the files it refused."""

from __future__ import annotations

import pytest

from serving.stores.keys import KeyStore
from tests.flow_env import Env, Ingesting

pytestmark = pytest.mark.unit


def test_an_upload_is_a_file_object_its_tenant_alone_sees(tmp_path):
    app = Ingesting(tmp_path)
    made = app.upload("../../etc/notes.md", b"# Notes\n\nLava is molten rock.").json()
    assert made["object"] == "file" and made["bytes"] == 29 and made["filename"] == "notes.md"
    assert [f["id"] for f in app.call("GET", "/v1/files").json()["data"]] == [made["id"]]
    assert app.call("GET", f"/v1/files/{made['id']}").json() == made
    assert app.call("GET", f"/v1/files/{made['id']}", "rival").status_code == 404  # another tenant's id
    assert app.call("DELETE", f"/v1/files/{made['id']}", "rival").status_code == 404
    assert not (tmp_path / "etc").exists() and not (app.root.parent / "etc").exists()  # the name is not a path


def test_uploads_are_bounded_per_file_and_per_tenant(tmp_path):
    app = Ingesting(tmp_path, max_file_bytes=1000, max_bytes_per_tenant=1500)
    too_big = app.upload("big.md", b"x" * 1001)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    assert app.upload("huge.md", b"x" * 200_000).status_code == 413  # refused by the edge before parsing
    assert app.upload("a.md", b"x" * 900).status_code == 200
    over = app.upload("b.md", b"x" * 900)
    assert over.status_code == 429 and over.json()["error"]["code"] == "upload_quota_exceeded"
    assert app.upload("c.md", b"x" * 900, key="rival").status_code == 200  # another tenant's quota


def test_only_an_ingest_scope_writes_to_an_index(tmp_path):
    app = Ingesting(tmp_path)
    file_id = app.upload("notes.md", b"# Notes\n\nLava.").json()["id"]
    assert app.upload("x.md", b"x", key="reader").status_code == 403
    for key, index, status in (("reader", "test", 403), ("writer", "other", 403), ("writer", "test", 200)):
        reply = app.call("POST", f"/v1/indexes/{index}/files", key, json={"file_id": file_id})
        assert reply.status_code == status, (key, index, reply.text)
    assert app.call("POST", "/v1/indexes/test/jobs", "reader").status_code == 403
    assert app.call("POST", "/v1/indexes/test/files", json={"file_id": "file-" + "0" * 24}).status_code == 404
    bad_name = app.call("POST", "/v1/indexes/no%20spaces!/files", json={"file_id": file_id})
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "index"


def test_an_index_job_runs_the_cli_on_the_indexs_sources_one_at_a_time(tmp_path):
    app = Ingesting(tmp_path)
    good = app.upload("notes.md", b"# Notes\n\nLava.").json()["id"]
    bad = app.upload("broken.pdf", b"not a pdf").json()["id"]
    for file_id in (good, bad):
        assert app.call("POST", "/v1/indexes/test/files", json={"file_id": file_id}).status_code == 200
    sources = app.root / "sources" / "test"
    assert sorted(p.relative_to(sources).as_posix() for p in sources.rglob("*.*")) == sorted(
        [f"{good}/notes.md", f"{bad}/broken.pdf"]
    )
    job = app.call("POST", "/v1/indexes/test/jobs").json()
    entrypoint, _ = app.jobs.submitted[job["id"]]
    assert job["status"] == "queued" and f"-m rayrag index --source {sources} --index test" in entrypoint
    busy = app.call("POST", "/v1/indexes/test/jobs")
    assert busy.status_code == 409 and job["id"] in busy.json()["error"]["message"]
    report = {"version": "v2", "documents": {"listed": 2, "parsed": 1, "unchanged": 0, "skipped": 1, "deleted": 0},
              "chunks": {"added": 1, "removed": 0, "total": 1},
              "skipped": [{"path": f"{bad}/broken.pdf", "reason": "corrupt PDF"}]}  # fmt: skip
    app.jobs.finish(job["id"], app.ingest.files.report_location(job["id"]), report)
    done = app.call("GET", f"/v1/indexes/test/jobs/{job['id']}").json()
    assert done["status"] == "completed" and done["version"] == "v2" and done["chunks"]["total"] == 1
    assert done["bad_files"] == [{"file_id": bad, "filename": "broken.pdf", "reason": "corrupt PDF"}]
    assert app.call("GET", f"/v1/indexes/other/jobs/{job['id']}", "rival").status_code == 404
    assert app.call("DELETE", f"/v1/files/{bad}").status_code == 200  # gone from the sources too
    assert [p.relative_to(sources).as_posix() for p in sources.rglob("*.*")] == [f"{good}/notes.md"]
    assert app.call("POST", "/v1/indexes/test/jobs").status_code == 200  # the next job may start


def test_ingest_is_off_unless_configured(tmp_path):
    reply = Env(tmp_path).http.post("/v1/files", files={"file": ("a.md", b"x")})
    assert reply.status_code == 404 and "serve.gateway.ingest.enabled" in reply.json()["error"]["message"]


def test_keys_create_grants_an_ingest_scope(tmp_path):
    from typer.testing import CliRunner

    from rayrag.cli import app

    config = tmp_path / "rayrag.yaml"
    config.write_text(f"serve:\n  gateway:\n    auth:\n      store: {tmp_path / 'keys.sqlite'}\n")
    made = CliRunner().invoke(app, ["keys", "create", "--tenant", "acme", "--ingest", "test", "--config", str(config)])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert KeyStore(tmp_path / "keys.sqlite").lookup(key).ingest == ["test"]
