"""MCP on the gateway: the SDK's own client over streamable HTTP against the gateway's real app (a
fake retriever and generator behind it): the tools are listed, `search` and `answer` go through
the same flow as REST (scoped, recorded, charged), and a bad key or a bad argument is refused."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from serving.stores.keys import KeyStore
from tests.flow_env import Env, Ingesting

pytestmark = pytest.mark.unit
URL = "http://127.0.0.1:8000"  # the Host the SDK's DNS-rebinding check allows for a loopback gateway


def with_client(env: Env, work, key: str | None = None):
    """Run `work(client)` with an MCP client connected to `env`'s app in-process, its lifespan entered
    (once per app, as Serve does per replica: each call here takes a fresh `Env`)."""
    app = env.http.app

    async def session():
        async with app.router.lifespan_context(app):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=URL, headers=headers)
            async with http, Client(streamable_http_client(f"{URL}/mcp", http_client=http)) as client:
                return await work(client)

    return asyncio.run(session())


def test_the_tools_search_and_answer_through_the_gateways_flow(tmp_path):
    env = Env(tmp_path)

    async def work(client):
        tools = {tool.name for tool in (await client.list_tools()).tools}
        indexes = await client.call_tool("list_indexes", {})
        found = await client.call_tool("search", {"index": "test", "query": "What is a volcano?", "top_k": 1})
        answered = await client.call_tool("answer", {"index": "test", "question": "What is a volcano?"})
        return tools, indexes, found, answered

    tools, indexes, found, answered = with_client(env, work)
    assert tools == {"list_indexes", "search", "answer", "add_documents"}
    assert indexes.structured_content["result"] == [
        {"index": "test", "version": "v1", "chunks": 2, "model": "rag:test"}
    ]
    assert [c["source"] for c in found.structured_content["chunks"]] == ["volcanoes.md"]
    answer = answered.structured_content
    assert not answered.is_error and answer["citations"][0]["source"] == "volcanoes.md" and answer["answer"]
    assert env.http.get(f"/v1/records/{answer['id']}").json()["backend"] == "vllm"  # recorded like a REST answer
    assert env.spent() == answer["usage"]["total_tokens"]  # and charged


def test_a_bad_key_is_refused_at_the_door_and_an_index_outside_the_key_in_the_tool(tmp_path):
    env = Env(tmp_path, auth=True)
    store = KeyStore(tmp_path / "keys.sqlite")
    other = store.create("acme", ["another-index"], [])[0]
    with pytest.raises(Exception, match="error"):  # the SDK reports the refused connection as its own error
        with_client(Env(tmp_path, auth=True), lambda client: client.list_tools(), key="rr-not-a-key")
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    refused = env.http.post("/mcp", json=hello, headers={"authorization": "Bearer rr-not-a-key"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"  # REST's refusal

    async def search_elsewhere(client):
        return await client.call_tool("search", {"index": "test", "query": "volcano"})

    result = with_client(env, search_elsewhere, key=other)
    assert result.is_error and result.content[0].text.endswith(
        "403 permission_denied: this key may not use index 'test'"
    )
    assert env.retriever.searches == []  # refused before retrieval


def test_a_bad_argument_is_a_tool_error_naming_it(tmp_path):
    env = Env(tmp_path)

    async def work(client):
        return await client.call_tool("search", {"index": "test", "query": "volcano", "top_k": 0})

    result = with_client(env, work)
    assert result.is_error and "400 invalid_request: top_k" in result.content[0].text


def test_add_documents_uploads_and_starts_the_index_job_for_an_ingest_key_only(tmp_path):
    app = Ingesting(tmp_path)
    documents = [{"filename": "notes.md", "content": "# Notes\n\nLava is molten rock."}]

    async def add(client):
        return await client.call_tool("add_documents", {"index": "test", "documents": documents})

    added = with_client(app.env, add, key=app.keys["writer"])
    files = added.structured_content["result"]
    assert not added.is_error and [f["status"] for f in files] == ["in_progress"] and len(app.jobs.submitted) == 1
    assert list(app.ingest.files.attached("test").values()) == [f"{files[0]['id']}/notes.md"]
    app = Ingesting(tmp_path / "again")
    refused = with_client(app.env, add, key=app.keys["reader"])
    assert refused.is_error and "403 permission_denied" in refused.content[0].text and not app.jobs.submitted
