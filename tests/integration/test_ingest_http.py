"""Documents in over HTTP on the real app and Ray's real job API: three files uploaded with the
official `openai` client (one corrupt), added to the index, indexed by a job the gateway starts
(`rayrag index` on the cluster), searched once the retriever reloads; then one deleted and the index
re-run: its chunks are gone, the report named the corrupt file, CURRENT moved twice."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from ray import serve

from indexes.storage import locate
from serving.app import build_app
from serving.stores.keys import KeyStore
from tests.integration.serving_support import app_args, free_port, indexed_corpus, serve_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
FILES = {
    "geysers.md": b"# Geysers\n\nA geyser is a hot spring that erupts water and steam at intervals. "
    b"Old Faithful in Yellowstone erupts about every ninety minutes.\n",
    "glaciers.md": b"# Glaciers\n\nA glacier is a mass of ice that moves slowly downhill under its own weight. "
    b"Glaciers carve U-shaped valleys and fjords.\n",
    "broken.pdf": b"%PDF-1.7 this is not really a pdf",
}


@pytest.fixture(scope="module")
def ingesting(ray_cluster, jobs_address, tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    config = indexed_corpus(root)
    keys = KeyStore(root / "keys.sqlite")
    key = keys.create("acme", ["test"], ["*"], ingest=["test"])[0]
    admin = keys.create("acme", ["*"], ["*"], ingest=["*"])[0]  # may create (and drop) new indexes
    port = free_port()
    settings = serve_settings(config.indexes.root, port, primary=None, fallback=None)
    settings["router"] |= {"chain": [{"backend": "extractive"}]}
    settings["gateway"] |= {
        "auth": {"enabled": True, "store": str(root / "keys.sqlite")},
        "ingest": {
            "enabled": True,
            "root": str(root / "uploads"),
            "jobs_address": jobs_address,
            "create_indexes": True,
        },
    }
    settings["retriever"] |= {"discover": True}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(app_args(config.indexes.root, settings)), name="ingest", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/readyz", lambda r: r.status_code == 200)
    yield {"url": url, "key": key, "admin": admin, "index_root": config.indexes.root}
    serve.shutdown()


def finished(http: httpx.Client, job_id: str) -> dict:
    """Poll the job until Ray reports it ended (bounded); its last state."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = http.get(f"/v1/indexes/test/jobs/{job_id}").raise_for_status().json()
        if job["status"] in {"completed", "failed", "cancelled"}:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} never ended: {job}")


def sources_found(http: httpx.Client, query: str) -> list[str]:
    reply = http.post("/v1/search", json={"query": query, "index": "test", "top_k": 3, "mode": "dense"})
    return [chunk["source"].rsplit("/", 1)[-1] for chunk in reply.raise_for_status().json()["chunks"]]


def until_served(http: httpx.Client, version: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if http.get("/v1/models").json()["data"][-1].get("index_version") == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"version {version} never served")


def test_upload_index_search_delete_and_reindex(ingesting):
    client = openai.OpenAI(base_url=f"{ingesting['url']}/v1", api_key=ingesting["key"], max_retries=0)
    http = httpx.Client(base_url=ingesting["url"], headers={"authorization": f"Bearer {ingesting['key']}"}, timeout=60)
    location = locate(ingesting["index_root"], "test")
    versions = [location.current_version()]
    uploaded = {name: client.files.create(file=(name, data), purpose="assistants") for name, data in FILES.items()}
    assert {f.filename for f in uploaded.values()} == set(FILES) and uploaded["geysers.md"].bytes == len(
        FILES["geysers.md"]
    )
    for file in uploaded.values():
        http.post("/v1/indexes/test/files", json={"file_id": file.id}).raise_for_status()

    job = http.post("/v1/indexes/test/jobs").raise_for_status().json()
    assert http.post("/v1/indexes/test/jobs").status_code in (200, 409)  # 409 while it runs; it may be done
    done = finished(http, job["id"])
    assert done["status"] == "completed", done
    assert [(b["file_id"], b["filename"]) for b in done["bad_files"]] == [(uploaded["broken.pdf"].id, "broken.pdf")]
    versions.append(location.current_version())
    until_served(http, done["version"])
    assert sources_found(http, "Old Faithful geyser eruptions")[0] == "geysers.md"
    assert "glaciers.md" in sources_found(http, "glacier ice carving valleys")

    assert client.files.delete(uploaded["glaciers.md"].id).deleted
    again = finished(http, http.post("/v1/indexes/test/jobs").raise_for_status().json()["id"])
    assert again["status"] == "completed" and again["documents"]["deleted"] == 1, again
    versions.append(location.current_version())
    until_served(http, again["version"])
    assert "glaciers.md" not in sources_found(http, "glacier ice carving valleys")
    assert len(set(versions)) == 3 and versions[-1] == again["version"]  # CURRENT moved twice


def settled(client: openai.OpenAI, store_id: str = "vs_test") -> openai.types.VectorStore:
    """The store once no job runs or waits (each read may start a pending one), bounded."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        store = client.vector_stores.retrieve(store_id)
        if store.status == "completed":
            return store
        time.sleep(1)
    raise AssertionError(f"{store_id} never settled: {store}")


def until(predicate, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout_s:.0f} s: {what}")
        time.sleep(0.5)


def test_the_openai_clients_vector_stores_and_file_search_on_an_index(ingesting):
    """The official client unchanged: a file batch indexes two uploads (one corrupt) into vs_test, the
    files report their status, search and a file_search response find the good one, removing it
    re-indexes without it."""
    client = openai.OpenAI(base_url=f"{ingesting['url']}/v1", api_key=ingesting["key"], max_retries=0, timeout=120)
    tides = client.files.create(file=("springs.md", b"# Hot springs\n\nA hot spring is water heated by magma "
                                      b"deep underground, such as the springs at Pamukkale.\n"), purpose="assistants")  # fmt: skip
    broken = client.files.create(file=("broken.docx", b"PK not really a docx"), purpose="assistants")
    assert "vs_test" in [store.id for store in client.vector_stores.list()]
    client.vector_stores.file_batches.create("vs_test", file_ids=[tides.id, broken.id])
    store = settled(client)
    statuses = {f.id: (f.status, f.last_error) for f in client.vector_stores.files.list("vs_test")}
    assert statuses[tides.id] == ("completed", None) and statuses[broken.id][0] == "failed", statuses
    assert store.file_counts.failed >= 1 and store.file_counts.completed >= 1
    hits = client.vector_stores.search("vs_test", query="water heated by magma at Pamukkale", max_num_results=3)
    assert (hits.data[0].filename, hits.data[0].file_id) == ("springs.md", tides.id)
    tool = {"type": "file_search", "vector_store_ids": ["vs_test"]}
    response = client.responses.create(
        model="rag", input="What heats a hot spring?", tools=[tool], max_output_tokens=32
    )
    cited = [a.file_id for item in response.output if item.type == "message" for a in item.content[0].annotations]
    assert response.output_text and tides.id in cited
    client.vector_stores.files.delete(tides.id, vector_store_id="vs_test")
    settled(client)
    hits = client.vector_stores.search("vs_test", query="water heated by magma at Pamukkale", max_num_results=3)
    assert tides.id not in [hit.file_id for hit in hits.data]


def test_an_agent_adds_documents_through_rayrag_mcp(ingesting):
    """`rayrag mcp` (stdio) with an ingest key: add_documents uploads and indexes, search then finds it."""
    import asyncio
    import sys
    from pathlib import Path

    from mcp import Client, StdioServerParameters

    rayrag = str(Path(sys.executable).parent / "rayrag")
    server = StdioServerParameters(command=rayrag, args=["mcp", "--url", ingesting["url"]],
                                   env={"RAYRAG_API_KEY": ingesting["key"]})  # fmt: skip
    document = {"filename": "mudpots.md", "content": "# Mud pots\n\nA mud pot is an acidic hot spring that "
                "bubbles with grey clay, found at Hverir in Iceland.\n"}  # fmt: skip

    async def add():
        async with Client(server) as mcp:
            return await mcp.call_tool("add_documents", {"index": "test", "documents": [document]})

    added = asyncio.run(add())
    assert not added.is_error, added.content
    file_id = added.structured_content["result"][0]["id"]
    client = openai.OpenAI(base_url=f"{ingesting['url']}/v1", api_key=ingesting["key"], max_retries=0, timeout=120)
    settled(client)
    hits = client.vector_stores.search("vs_test", query="acidic hot spring with grey clay at Hverir", max_num_results=3)
    assert hits.data[0].file_id == file_id


def test_a_vector_store_for_a_new_index_is_served_then_dropped(ingesting):
    """With `ingest.create_indexes` and a discovering retriever: `vector_stores.create` makes a new
    index from its files (its first job publishes it, the retriever then serves it), and deleting the
    store drops the index (`rayrag index drop` as a job): no longer served, gone from the root."""
    from pathlib import Path

    client = openai.OpenAI(base_url=f"{ingesting['url']}/v1", api_key=ingesting["admin"], max_retries=0, timeout=120)
    upload = client.files.create(file=("lagoons.md", b"# Lagoons\n\nA lagoon is shallow water cut off from the "
                                       b"sea by a reef or a sandbar, like the lagoon of Venice.\n"), purpose="assistants")  # fmt: skip
    store = client.vector_stores.create(name="fresh", file_ids=[upload.id])
    assert store.id == "vs_fresh" and store.file_counts.total == 1
    until(lambda: client.vector_stores.files.retrieve(upload.id, vector_store_id="vs_fresh").status == "completed",
          "the new index served with the upload in it")  # fmt: skip
    hits = client.vector_stores.search("vs_fresh", query="shallow water behind a reef", max_num_results=2)
    assert hits.data[0].file_id == upload.id and "rag:fresh" in [m.id for m in client.models.list()]
    settled(client, "vs_fresh")  # the job ended (Ray reports it a moment after the version is served)
    assert client.vector_stores.delete("vs_fresh").deleted
    until(lambda: "rag:fresh" not in [m.id for m in client.models.list()], "the dropped index no longer served")
    assert not (Path(ingesting["index_root"]) / "fresh").exists()
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("vs_fresh")
    with pytest.raises(openai.BadRequestError):  # an index the config declares is never dropped over HTTP
        client.vector_stores.delete("vs_test")
