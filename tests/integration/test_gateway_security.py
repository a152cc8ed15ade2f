"""Keys, tenants and quotas through HTTP with the official `openai` client: 401, 403, 429 and exact
counters under 50 concurrent requests, on SQLite and on a real Redis server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from ray import serve

from serving.app import build_app
from serving.stores.keys import KeyLimits, KeyStore
from serving.stores.quotas import WINDOW_S
from serving.stores.records import RecordStore
from tests.integration.conftest import job_config, run_job
from tests.integration.serving_support import app_args, free_port, make_corpus, serve_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def secure(ray_cluster, tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("secure")
    config = job_config(root)
    run_job(config, make_corpus(root))
    store = KeyStore(root / "keys.sqlite")
    keys = {
        "acme": store.create("acme", ["test"], ["*"])[0],
        "other": store.create("other", ["other-index"], ["*"])[0],
        "limited": store.create("acme", ["test"], ["*"], KeyLimits(requests_per_minute=30))[0],
        "redis-limited": store.create("acme", ["test"], ["*"], KeyLimits(requests_per_minute=30))[0],
        "budget": store.create("acme", ["test"], ["*"], KeyLimits(credit_budget=1))[0],
        "bravo": store.create("bravo", ["test"], ["*"])[0],
        "busy": store.create(
            "acme", ["test"], ["*"], KeyLimits(requests_per_minute=100_000, tokens_per_minute=1_000_000_000)
        )[0],
    }
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for name, backend in (("sqlite", "sqlite"), ("redis", "redis")):
        settings = serve_settings(config.indexes.root, port, primary=None)
        settings["gateway"] |= {
            "auth": {"enabled": True, "store": str(root / "keys.sqlite")},
            "quotas": {
                "enabled": True,
                "backend": backend,
                "sqlite_path": str(root / "quotas.sqlite"),
                "redis_url": redis_url,
            },
        }
        settings["app_name"] = name
        serve.run(
            build_app(app_args(config.indexes.root, settings)), name=name, route_prefix=f"/{name}", blocking=False
        )
    url = f"http://127.0.0.1:{port}"
    for name in ("sqlite", "redis"):
        wait_for(f"{url}/{name}/readyz", lambda r: r.status_code == 200)
    yield {"url": url, "keys": keys, "root": root}
    serve.shutdown()


def client(secure, key: str | None, app: str = "sqlite") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{secure['url']}/{app}/v1", api_key=key or "missing", max_retries=0, timeout=120)


def test_no_key_or_a_bad_key_is_401(secure):
    assert httpx.get(f"{secure['url']}/sqlite/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(secure, "rr_bad_key").models.list()


def test_keys_see_and_use_only_their_tenants_indexes(secure):
    acme, other = client(secure, secure["keys"]["acme"]), client(secure, secure["keys"]["other"])
    assert {m.id for m in acme.models.list()} == {MODEL, "rag:test"}
    assert {m.id for m in other.models.list()} == {MODEL}  # other-index is not served; test is not theirs
    reply = acme.chat.completions.create(
        model="rag:test", messages=[{"role": "user", "content": "What is a volcano?"}], max_tokens=4
    )
    assert reply.rayrag["citations"]
    answers = []
    for model in ("rag:test", "rag:does-not-exist"):  # someone else's index and no index answer alike
        with pytest.raises(openai.PermissionDeniedError) as refused:
            other.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        answers.append(refused.value.body["message"].replace(model.removeprefix("rag:"), "<index>"))
    assert answers[0] == answers[1]
    headers = {"authorization": f"Bearer {secure['keys']['other']}"}
    search = httpx.post(f"{secure['url']}/sqlite/v1/search", json={"query": "lava", "index": "test"}, headers=headers)
    assert search.status_code == 403 and search.json()["error"]["code"] == "permission_denied"
    assert "indexes" not in httpx.get(f"{secure['url']}/sqlite/readyz").json()


@pytest.mark.parametrize(("app", "key"), [("sqlite", "limited"), ("redis", "redis-limited")])
def test_requests_per_minute_are_exact_under_50_concurrent_requests(secure, app, key):
    headers = {"authorization": f"Bearer {secure['keys'][key]}"}

    def one(_):
        return httpx.post(f"{secure['url']}/{app}/v1/search", json={"query": "lava", "index": "test", "top_k": 1},
                          headers=headers, timeout=60)  # fmt: skip

    left = WINDOW_S - time.time() % WINDOW_S
    if left < 20:  # the burst must fall in one quota window: start it when the next one opens
        time.sleep(left + 0.5)
    with ThreadPoolExecutor(25) as pool:
        responses = list(pool.map(one, range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 30 and statuses.count(429) == 20  # exactly the key's 30 per minute
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60 and refused.json()["error"]["type"] == "rate_limit_error"


def test_spent_credit_budget_stops_the_key(secure):
    budget = client(secure, secure["keys"]["budget"])
    budget.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.RateLimitError) as stopped:
        budget.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert stopped.value.body["code"] == "insufficient_quota"


def test_answer_records_and_feedback_are_per_tenant(secure):
    acme_headers = {"authorization": f"Bearer {secure['keys']['acme']}"}
    other_headers = {"authorization": f"Bearer {secure['keys']['other']}"}
    reply = client(secure, secure["keys"]["acme"]).chat.completions.create(
        model="rag:test", messages=[{"role": "user", "content": "What makes sourdough rise?"}], max_tokens=4
    )
    url = f"{secure['url']}/sqlite/v1"
    record = httpx.get(f"{url}/records/{reply.id}", headers=acme_headers).json()
    assert record["prompt"] == "rag_answer@1" and record["backend"] == "llama_cpp" and record["index"] == "test"
    assert record["chunks"][0]["source"] == "sourdough.md" and record["usage"]["total_tokens"] > 0
    assert httpx.get(f"{url}/records/{reply.id}", headers=other_headers).status_code == 404
    feedback = {"request_id": reply.id, "rating": "down", "comment": "too short"}
    assert httpx.post(f"{url}/feedback", json=feedback, headers=other_headers).status_code == 404
    assert httpx.post(f"{url}/feedback", json=feedback, headers=acme_headers).json()["stored"]
    assert httpx.post(f"{url}/feedback", json=feedback | {"rating": "meh"}, headers=acme_headers).status_code == 400
    exported = list(RecordStore(secure["root"] / "records.sqlite").export())
    assert [(r["request_id"], r["feedback"]["rating"]) for r in exported] == [(reply.id, "down")]


# -- hostile clients against the real gateway (issue: hardening) -------------------------------


def bearer(secure, key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secure['keys'][key]}"}


def test_another_tenant_reusing_a_request_id_touches_nothing(secure):
    url = f"{secure['url']}/sqlite/v1"
    body = {"model": "rag:test", "messages": [{"role": "user", "content": "What is a volcano?"}], "max_tokens": 4}
    mine = httpx.post(f"{url}/chat/completions", json=body, timeout=120,
                      headers=bearer(secure, "acme") | {"x-request-id": "guessable-1"})  # fmt: skip
    feedback = {"request_id": mine.json()["id"], "rating": "up"}
    assert httpx.post(f"{url}/feedback", json=feedback, headers=bearer(secure, "acme")).status_code == 200
    theirs = httpx.post(f"{url}/chat/completions", json=body, timeout=120,
                        headers=bearer(secure, "bravo") | {"x-request-id": "guessable-1"})  # fmt: skip
    assert theirs.status_code == 200 and theirs.json()["id"] != mine.json()["id"]
    record = httpx.get(f"{url}/records/{mine.json()['id']}", headers=bearer(secure, "acme")).json()
    assert record["tenant"] == "acme" and record["client_request_id"] == "guessable-1"
    assert record["feedback"]["rating"] == "up"
    assert httpx.get(f"{url}/records/guessable-1", headers=bearer(secure, "bravo")).status_code == 404


def test_schemathesis_finds_no_server_error(secure, tmp_path):
    """Every operation of /openapi.json, a bounded number of generated requests each (fixed seed):
    no 5xx, and every documented response conforms to its schema."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    report = tmp_path / "schemathesis.json"
    base = f"{secure['url']}/sqlite"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json", "--url", base,
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "8", "--seed", "0",
         "--phases", "examples,fuzzing", "--generation-deterministic", "--no-shrink",
         "-H", f"Authorization: Bearer {secure['keys']['busy']}", "--request-timeout", "120",
         "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    summary = json.loads(report.read_text())
    assert summary, "schemathesis wrote no report"


def test_hostile_traffic_leaves_normal_queries_answered_and_breakers_closed(secure):
    """Oversized bodies, huge lists, lone surrogates, bad schemas and idle websockets, interleaved
    with normal queries for a bounded number of rounds: every normal query is answered, every hostile
    request is a 4xx (or a refused socket), and no generator's circuit opens."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"{secure['url']}/sqlite"
    headers = bearer(secure, "busy") | {"content-type": "application/json"}
    hostile = [
        ("/v1/chat/completions", b'{"model": "rag:test", "messages": [' + b'{"role": "user", "content": "x"},' * 60_000 + b"]}"),
        ("/v1/embeddings", json_bytes({"model": "rag:test", "input": ["x"] * 5000})),
        ("/v1/chat/completions", b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "\\ud800"}]}'),
        ("/v1/chat/completions", json_bytes({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}],
                                             "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}})),
        ("/v1/search", json_bytes({"query": "lava", "index": "test", "source": "*" * 4000})),
        ("/v1/moderations", json_bytes({"input": ["a." * 4000] * 20})),
    ]  # fmt: skip
    idle = [connect(f"ws://{url.removeprefix('http://')}/v1/chat/ws",
                    additional_headers={"authorization": headers["authorization"]}) for _ in range(8)]  # fmt: skip
    statuses, answered = [], []
    try:
        for round_ in range(4):
            for path, raw in hostile:
                statuses.append(httpx.post(f"{url}{path}", content=raw, headers=headers, timeout=120).status_code)
            query = {"query": f"What is a volcano? ({round_})", "index": "test", "max_tokens": 4}
            answered.append(httpx.post(f"{url}/v1/query", json=query, headers=headers, timeout=120).status_code)
        with pytest.raises(InvalidStatus):  # the ninth socket of this key: refused before the handshake completes
            connect(f"ws://{url.removeprefix('http://')}/v1/chat/ws",
                    additional_headers={"authorization": headers["authorization"]}).recv(timeout=30)  # fmt: skip
    finally:
        for socket in idle:
            socket.close()
    assert answered == [200] * 4
    assert statuses and all(400 <= s < 500 for s in statuses), statuses
    breakers = serve.get_deployment_handle("router", app_name="sqlite").breakers.remote().result()
    assert set(breakers.values()) == {"closed"}, breakers


def json_bytes(value) -> bytes:
    import json

    return json.dumps(value).encode()


def test_mcp_tools_over_http_and_stdio_behind_the_same_keys(secure):
    """The SDK's own client: at the gateway's /mcp (streamable HTTP) and through `rayrag mcp` (stdio,
    calling the gateway's REST API); the tools list, search and answer with citations, the answer is
    recorded under the key's tenant, and a bad key is refused at the door."""
    import asyncio
    import sys
    from pathlib import Path

    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    base, key = f"{secure['url']}/sqlite", secure["keys"]["acme"]
    question = {"index": "test", "question": "What is a volcano?", "max_tokens": 16}

    async def over_http():
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=120)
        async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as mcp:
            tools = {tool.name for tool in (await mcp.list_tools()).tools}
            indexes = (await mcp.call_tool("list_indexes", {})).structured_content["result"]
            found = await mcp.call_tool("search", {"index": "test", "query": "What is a volcano?", "top_k": 2})
            return tools, indexes, found.structured_content, (await mcp.call_tool("answer", question))

    async def over_stdio():
        rayrag = str(Path(sys.executable).parent / "rayrag")
        server = StdioServerParameters(command=rayrag, args=["mcp", "--url", base], env={"RAYRAG_API_KEY": key})
        async with Client(server) as mcp:
            return (await mcp.call_tool("search", {"index": "test", "query": "What is a volcano?"})).structured_content

    tools, indexes, found, answered = asyncio.run(over_http())
    assert tools == {"list_indexes", "search", "answer", "add_documents"} and [i["index"] for i in indexes] == ["test"]
    assert found["chunks"][0]["source"].endswith("volcanoes.md")
    answer = answered.structured_content
    assert not answered.is_error and answer["citations"] and answer["backend"] == "llama_cpp"
    record = httpx.get(f"{base}/v1/records/{answer['id']}", headers=bearer(secure, "acme"), timeout=30).json()
    assert record["tenant"] == "acme"
    assert asyncio.run(over_stdio())["chunks"][0]["source"].endswith("volcanoes.md")
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    refused = httpx.post(f"{base}/mcp", json=hello, headers={"authorization": "Bearer rr_bad_key"}, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
