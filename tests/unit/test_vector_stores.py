"""OpenAI's vector stores and `file_search` responses over the gateway's real app (fake retriever,
generator and Ray jobs): a store is a served index, a write starts its job (or leaves it pending
while one runs), a file's status is what the served index holds, search is /v1/search, and a
file_search response is a RAG answer whose citations are `file_citation` annotations."""

from __future__ import annotations

import pytest

from serving.stores.keys import KeyStore
from tests.flow_env import Ingesting

pytestmark = pytest.mark.unit


def test_a_store_is_a_served_index_the_key_may_read(tmp_path):
    app = Ingesting(tmp_path)
    stores = app.call("GET", "/v1/vector_stores", "reader").json()["data"]
    assert [(s["id"], s["name"], s["status"], s["file_counts"]["total"]) for s in stores] == [
        ("vs_test", "test", "completed", 0)
    ]
    assert app.call("GET", "/v1/vector_stores/vs_nope", "rival").status_code == 404  # (writer: 403, outside its scope)
    elsewhere = KeyStore(tmp_path / "keys.sqlite").create("acme", ["other"], ["*"])[0]
    assert (
        app.env.http.get("/v1/vector_stores/vs_test", headers={"authorization": f"Bearer {elsewhere}"}).status_code
        == 403
    )
    assert app.call("DELETE", "/v1/vector_stores/vs_test").status_code == 400  # a served index is not deleted here
    assert (
        app.call("POST", "/v1/vector_stores", json={"name": "unserved"}, key="rival").json()["error"]["param"] == "name"
    )


def test_files_added_to_a_store_are_indexed_by_one_job_at_a_time(tmp_path):
    app = Ingesting(tmp_path)
    good, bad, late = (app.upload(n, b"# T\n\ntext").json()["id"] for n in ("notes.md", "broken.pdf", "late.md"))
    batch = app.call("POST", "/v1/vector_stores/vs_test/file_batches", json={"file_ids": [good, bad]}).json()
    assert batch["file_counts"] == {"in_progress": 2, "completed": 0, "failed": 0, "cancelled": 0, "total": 2}
    assert len(app.jobs.submitted) == 1
    added = app.call("POST", "/v1/vector_stores/vs_test/files", json={"file_id": late}).json()
    assert added["status"] == "in_progress" and len(app.jobs.submitted) == 1  # pending: one job runs
    first = next(iter(app.jobs.submitted))
    app.jobs.finish(first, app.ingest.files.report_location(first), {"version": "v2", "documents": {}, "chunks": {}})
    assert app.call("GET", "/v1/vector_stores/vs_test").json()["status"] == "in_progress"  # the read started it
    second = list(app.jobs.submitted)[1]
    report = {"version": "v3", "documents": {}, "chunks": {},
              "skipped": [{"path": f"{bad}/broken.pdf", "reason": "corrupt PDF"}]}  # fmt: skip
    app.jobs.finish(second, app.ingest.files.report_location(second), report)
    app.env.retriever.PASSAGES = (*app.env.retriever.PASSAGES, (f"{good}/notes.md", "T", "text"))  # now served
    files = {f["id"]: f for f in app.call("GET", "/v1/vector_stores/vs_test/files").json()["data"]}
    assert files[good]["status"] == "completed" and files[late]["status"] == "in_progress"
    assert files[bad]["status"] == "failed" and files[bad]["last_error"]["message"] == "corrupt PDF"
    store = app.call("GET", "/v1/vector_stores/vs_test").json()
    assert store["status"] == "completed" and store["file_counts"]["failed"] == 1 and store["file_counts"]["total"] == 3
    first = app.call("GET", "/v1/vector_stores/vs_test/files", params={"limit": 2}).json()
    rest = app.call("GET", "/v1/vector_stores/vs_test/files", params={"limit": 2, "after": first["last_id"]}).json()
    assert (
        first["has_more"] and not rest["has_more"] and [f["id"] for f in first["data"] + rest["data"]] == sorted(files)
    )
    assert app.call("GET", "/v1/vector_stores/vs_test/files", params={"limit": 101}).status_code == 400
    removed = app.call("DELETE", f"/v1/vector_stores/vs_test/files/{late}").json()
    assert removed["deleted"] and len(app.jobs.submitted) == 3 and late not in app.ingest.files.attached("test")
    assert app.call("POST", "/v1/vector_stores/vs_test/files", "reader", json={"file_id": good}).status_code == 403


def test_a_store_search_is_the_indexs_search(tmp_path):
    app = Ingesting(tmp_path)
    page = app.call(
        "POST", "/v1/vector_stores/vs_test/search", "reader", json={"query": "volcano", "max_num_results": 1}
    )
    hit = page.json()["data"][0]
    assert (hit["filename"], hit["file_id"], hit["content"][0]["text"][:11]) == ("volcanoes.md", "", "A volcano i")
    assert app.env.retriever.searches[-1][0].top_k == 1
    for bad in ({"filters": {"type": "eq", "key": "a", "value": 1}}, {"rewrite_query": True}):
        reply = app.call("POST", "/v1/vector_stores/vs_test/search", json={"query": "x"} | bad)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == next(iter(bad))


def test_a_file_search_response_cites_with_file_citations_and_is_recorded(tmp_path):
    app = Ingesting(tmp_path)
    tool = {"type": "file_search", "vector_store_ids": ["vs_test"]}
    body = {"model": "m", "input": "What is a volcano?", "tools": [tool]}
    response = app.call("POST", "/v1/responses", "reader", json=body).json()
    call, message = response["output"]
    assert call["type"] == "file_search_call" and call["queries"] == ["What is a volcano?"]
    text, annotations = message["content"][0]["text"], message["content"][0]["annotations"]
    assert text and annotations[0] == {"type": "file_citation", "index": annotations[0]["index"], "file_id": "",
                                       "filename": "volcanoes.md"}  # fmt: skip
    record = app.call("GET", f"/v1/records/{response['id'].removeprefix('resp_')}", "reader")
    assert record.status_code == 200 and record.json()["endpoint"] == "chat"
    for bad, param in (({"tools": []}, "tools"), ({"stream": True}, "stream")):
        reply = app.call("POST", "/v1/responses", json=body | bad)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_a_new_store_creates_an_index_and_deleting_it_drops_that_index_only(tmp_path):
    app = Ingesting(tmp_path, create_indexes=True)
    file_id = app.upload("notes.md", b"# Notes\n\nLava.", key="rival").json()["id"]
    made = app.call("POST", "/v1/vector_stores", "rival", json={"name": "fresh", "file_ids": [file_id]}).json()
    assert made["id"] == "vs_fresh" and made["status"] == "in_progress" and made["file_counts"]["total"] == 1
    (job_id, (entrypoint, _)), = app.jobs.submitted.items()  # fmt: skip
    assert "index --source" in entrypoint and "--index fresh" in entrypoint
    assert "vs_fresh" in [s["id"] for s in app.call("GET", "/v1/vector_stores", "rival").json()["data"]]
    assert app.call("GET", "/v1/vector_stores/vs_fresh", "writer").status_code == 403  # not in its index scope
    assert app.call("DELETE", "/v1/vector_stores/vs_test", "rival").status_code == 400  # declared in the config
    assert app.call("DELETE", "/v1/vector_stores/vs_fresh", "rival").status_code == 409  # its first job runs
    app.jobs.finish(job_id, app.ingest.files.report_location(job_id), {"version": "v1", "documents": {}, "chunks": {}})
    assert app.call("DELETE", "/v1/vector_stores/vs_fresh", "rival").json()["deleted"]
    dropped = [entry for entry, _ in app.jobs.submitted.values() if " index drop fresh --yes " in entry]
    assert len(dropped) == 1 and app.ingest.files.attached("fresh") == {}
    assert app.call("GET", "/v1/vector_stores/vs_fresh", "rival").status_code == 404
    assert app.call("GET", f"/v1/files/{file_id}", "rival").status_code == 200  # the upload itself stays
