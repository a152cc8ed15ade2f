"""The chat page's server side: the page and its assets under a strict CSP, a citation's chunk and
source document behind the same keys as every route, and the SSE stream's citations up front."""

from __future__ import annotations

import json

import pytest

from indexes.store import Chunk, ChunkStore, sections
from serving.page import ASSETS
from serving.stores.keys import KeyStore
from tests.flow_env import Env

pytestmark = pytest.mark.unit


def test_the_page_and_its_assets_are_served_with_a_same_origin_only_policy(tmp_path):
    http = Env(tmp_path).http
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for name in ASSETS:
        assert f'"page/{name}"' in page.text  # relative: the page works under any route prefix
        asset = http.get(f"/page/{name}")
        assert asset.status_code == 200 and asset.headers["x-content-type-options"] == "nosniff"
    assert http.get("/page/../gateway.py").status_code == 404
    assert "//" not in page.text.replace("http://www.w3.org", "")  # nothing fetched from another origin


def test_a_citation_opens_its_chunk_and_its_document(tmp_path):
    http = Env(tmp_path).http
    chunk_id = f"{1:016x}"
    passage = http.get(f"/v1/indexes/test/chunks/{chunk_id}").json()
    assert passage["passage"]["source"] == "tides.md" and "Moon" in passage["passage"]["text"]
    document = http.get("/v1/indexes/test/document", params={"source": "tides.md"}).json()
    assert document["sections"][0]["chunk_id"] == chunk_id and not document["truncated"]


@pytest.mark.parametrize(
    ("path", "status", "param"),
    [
        (f"/v1/indexes/test/chunks/{9:016x}", 404, "chunk_id"),
        ("/v1/indexes/test/chunks/not-an-id", 400, "chunk_id"),
        ("/v1/indexes/test/document?source=nope.md", 404, "source"),
        ("/v1/indexes/test/document?source=" + "a" * 3000, 400, "source"),
        ("/v1/indexes/test/document", 400, "source"),
    ],
)
def test_a_bad_chunk_or_document_is_a_4xx_naming_the_parameter(tmp_path, path, status, param):
    reply = Env(tmp_path).http.get(path)
    assert reply.status_code == status and reply.json()["error"]["param"].split(".")[-1] == param


def test_chunks_and_documents_need_a_key_for_the_index(tmp_path):
    env = Env(tmp_path, auth=True)
    store = KeyStore(tmp_path / "keys.sqlite")
    other = store.create("acme", ["another-index"], [])[0]
    chunk = f"/v1/indexes/test/chunks/{0:016x}"
    assert env.http.get(chunk).status_code == 401
    assert env.http.get(chunk, headers={"authorization": f"Bearer {other}"}).status_code == 403
    allowed = store.create("acme", ["test"], [])[0]
    assert env.http.get(chunk, headers={"authorization": f"Bearer {allowed}"}).status_code == 200


def test_a_grounded_sse_stream_carries_its_citations_before_the_first_token(tmp_path):
    env = Env(tmp_path)
    body = {"model": "rag:test", "messages": [{"role": "user", "content": "What is a volcano?"}], "stream": True}
    with env.http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    first, tokens = events[0], [e for e in events if e["choices"]]
    assert not first["choices"] and [c["source"] for c in first["rayrag"]["citations"]] == ["volcanoes.md", "tides.md"]
    assert (
        events.index(first) < events.index(tokens[0])
        and events[-1]["rayrag"]["citations"] == first["rayrag"]["citations"]
    )


def test_a_document_is_its_chunks_merged_section_by_section(tmp_path):
    text = "# Tides\n\nTides rise and fall. The Moon pulls the sea. Spring tides come at full moon."
    parts = [
        Chunk("a" * 16, "t.md", text[0:40], 0, 40, "Tides", "Tides"),
        Chunk("b" * 16, "t.md", text[30:70], 30, 70, "Tides", "Tides"),  # overlaps the first by 10
        Chunk("c" * 16, "t.md", text[70:], 70, len(text), "Tides", "Spring"),
    ]
    store = ChunkStore(tmp_path / "chunks.sqlite")
    store.add(parts)
    merged = sections(store.document("t.md", 10))
    assert [(s.section, s.text) for s in merged] == [("Tides", text[0:70]), ("Spring", text[70:])]
    assert store.document("t.md", 2) == parts[:2] and store.document("other.md", 10) == []
    assert store.by_id("b" * 16) == parts[1] and store.by_id("d" * 16) is None
