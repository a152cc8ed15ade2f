"""Hostile clients and hostile tenants get a clear refusal, and nothing of anyone else's is lost.

Each test names a hole the gateway had and fails when it is open again. They run the real routes
(`create_app`) over the answer flow with fake engines (tests/flow_env.py): no Ray, so this tier is
quick; the same routes serve the Ray app.
"""

from __future__ import annotations

import json

import pytest
from starlette.websockets import WebSocketDisconnect

from serving.checks.guardrails import redact_pii
from serving.generator.protocol import GenerationRequest, ResponseFormat
from serving.ranking import _glob
from serving.stores.cache import SemanticCache
from serving.stores.keys import KeyStore
from tests.flow_env import QUESTION, Env

pytestmark = pytest.mark.security


def chat(model: str = "rag:test", content: str = QUESTION, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8} | fields


@pytest.fixture
def tenants(tmp_path):
    """An app with auth on and keys: tenants A and B on every index, and two keys of tenant A limited
    to one index each."""
    env = Env(tmp_path, auth=True)
    store = KeyStore(tmp_path / "keys.sqlite")
    keys = {
        "a": store.create("acme", ["*"], ["*"])[0],
        "b": store.create("bravo", ["*"], ["*"])[0],
        "a_test": store.create("acme", ["test"], ["*"])[0],
        "a_other": store.create("acme", ["other"], ["*"])[0],
    }
    env.headers = {name: {"authorization": f"Bearer {key}"} for name, key in keys.items()}
    return env


# -- tenants ----------------------------------------------------------------------------------


def test_a_client_request_id_never_becomes_the_key_of_an_answer(tenants):
    """B reusing A's x-request-id used to overwrite A's record and erase A's feedback."""
    http, h = tenants.http, tenants.headers
    a = http.post("/v1/chat/completions", json=chat(), headers=h["a"] | {"x-request-id": "shared-id"})
    assert http.post("/v1/feedback", json={"request_id": a.json()["id"], "rating": "up"}, headers=h["a"]).status_code == 200
    b = http.post("/v1/chat/completions", json=chat(content="What causes tides?"),
                  headers=h["b"] | {"x-request-id": "shared-id"})  # fmt: skip
    assert a.json()["id"] != b.json()["id"] != "shared-id"
    assert a.headers["x-rayrag-request-id"] == a.json()["id"]
    record = http.get(f"/v1/records/{a.json()['id']}", headers=h["a"]).json()
    assert record["client_request_id"] == "shared-id" and record["feedback"]["rating"] == "up"
    assert http.post("/v1/feedback", json={"request_id": a.json()["id"], "rating": "down"},
                     headers=h["b"]).status_code == 404  # fmt: skip
    assert http.get(f"/v1/records/{a.json()['id']}", headers=h["a"]).json()["feedback"]["rating"] == "up"


def test_a_session_belongs_to_the_index_scope_of_the_key_that_made_it(tenants):
    http, h = tenants.http, tenants.headers
    made = http.post("/v1/chat/completions", json=chat(session_id="s1"), headers=h["a_test"])
    assert made.status_code == 200
    assert http.get("/v1/sessions/s1", headers=h["a_test"]).status_code == 200
    assert http.get("/v1/sessions/s1", headers=h["a_other"]).status_code == 404  # same tenant, other scope
    assert http.get("/v1/sessions/s1", headers=h["b"]).status_code == 404
    tenants.ask_other = http.post("/v1/chat/completions", json=chat(model="m", session_id="s1"), headers=h["a_other"])
    seen = tenants.generator.requests[-1].messages
    assert QUESTION not in [m.content for m in seen[:-1]]  # a_test's turn did not leak into a_other's prompt


def test_rag_routes_and_query_use_only_models_the_key_may_use(tmp_path):
    env = Env(tmp_path, auth=True)
    key = KeyStore(tmp_path / "keys.sqlite").create("acme", ["test"], ["another-model"])[0]
    headers = {"authorization": f"Bearer {key}"}
    query = env.http.post("/v1/query", json={"query": QUESTION, "index": "test"}, headers=headers).json()
    rag = env.http.post("/v1/chat/completions", json=chat(), headers=headers).json()
    assert query["backend"] == rag["rayrag"]["backend"] == "extractive"
    assert env.generator.calls == 0
    assert env.http.post("/v1/query", json={"query": QUESTION, "index": "test", "model": "m"},
                         headers=headers).status_code == 403  # fmt: skip


# -- abuse of resources -----------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(tmp_path):
    env = Env(tmp_path, limits={"max_body_bytes": 4096})
    big = json.dumps(chat(content="x" * 5000))
    declared = env.http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunks():
        yield big[:3000].encode()
        yield big[3000:].encode()

    streamed = env.http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert env.generator.calls == 0
    small = env.http.post("/v1/chat/completions", json=chat())
    assert small.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}] * 129}, "messages"),
        ("/v1/chat/completions", chat(model="m", stop=["a", "b", "c", "d", "e"]), "stop"),
        ("/v1/embeddings", {"model": "rag:test", "input": ["hi"] * 257}, "input"),
        ("/v1/moderations", {"input": ["hi"] * 257}, "input"),
        ("/v1/grade", {"question": "q", "answer": "a", "passages": ["p"] * 65}, "passages"),
        ("/v1/search", {"query": "lava", "index": "test", "source": "*" * 513}, "source"),
        ("/v1/query", {"query": "lava", "index": "test", "section": "s" * 513}, "section"),
    ],
)
def test_lists_and_filters_over_their_caps_are_400_naming_the_parameter(env_factory, path, body, param):
    env = env_factory()
    response = env.http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert env.generator.calls == 0


@pytest.fixture
def env_factory(tmp_path):
    return lambda **settings: Env(tmp_path, **settings)


def test_a_lone_surrogate_is_a_400_not_a_500(env_factory):
    env = env_factory()
    raw = '{"model": "rag:test", "messages": [{"role": "user", "content": "\\ud800 hi"}]}'
    response = env.http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]
    search = env.http.post("/v1/search", content='{"query": "\\udfff"}', headers={"content-type": "application/json"})
    assert search.status_code == 400


def test_a_schema_that_is_not_a_json_schema_is_a_400(env_factory):
    env = env_factory()
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    response = env.http.post("/v1/chat/completions", json=chat(model="m", response_format=bad))
    assert response.status_code == 400 and response.json()["error"]["param"] == "response_format"
    assert env.generator.calls == 0


def test_a_schema_llama_cpp_cannot_compile_is_the_clients_error():
    from serving.errors import InvalidRequest
    from serving.generator.llama_cpp_engine import LlamaCppGenerator

    schema = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
    request = GenerationRequest(prompt="x", response_format=ResponseFormat(type="json_schema", schema=schema))
    with pytest.raises(InvalidRequest) as refused:
        LlamaCppGenerator._grammar(None, request)
    assert refused.value.status == 400 and refused.value.param == "response_format"


@pytest.mark.timeout(20)  # a hang detector, not a timing claim: the quadratic pattern took minutes here
def test_the_email_pattern_is_linear_on_hostile_input():
    hostile = "a." * 100_000
    assert redact_pii(hostile) == hostile
    assert redact_pii(hostile + " jane@x.org").endswith(" [EMAIL]")
    assert redact_pii("a." * 40 + "@x.org") == "a." * 40 + "@x.org"  # a local part over 64 is not an address
    assert redact_pii("write to jane.doe+x@example.co.uk today") == "write to [EMAIL] today"


def test_caches_keyed_by_client_input_are_bounded(tmp_path):
    from serving.config import CacheConfig
    from serving.generator.llama_cpp_engine import GRAMMAR_CACHE, _compiled_grammar

    assert _glob.cache_info().maxsize == 256
    assert _compiled_grammar.cache_info().maxsize == GRAMMAR_CACHE
    cache = SemanticCache(CacheConfig(enabled=True, path=tmp_path / "c.sqlite", max_entries=3))
    for n in range(5):
        cache.store("p", "test", "v1", f"question {n}", [1.0, 0.0], {"n": n})
    rows = cache._db.execute("SELECT question FROM cache ORDER BY created").fetchall()
    assert [q for (q,) in rows] == ["question 2", "question 3", "question 4"]


# -- the websocket ----------------------------------------------------------------------------


def socket_close_code(env: Env, headers: dict | None = None, send: str | None = None) -> int:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        env.http.websocket_connect("/v1/chat/ws", headers=headers or {}) as ws,
    ):
        if send is not None:
            ws.send_text(send)
        ws.receive_json()
    return closed.value.code


def test_the_websocket_checks_the_key_before_accepting(tenants):
    assert socket_close_code(tenants) == 1008
    assert socket_close_code(tenants, {"authorization": "Bearer rr_nope_nope"}) == 1008
    assert tenants.generator.calls == 0


def test_the_websocket_refuses_foreign_origins_big_frames_and_idles(env_factory):
    env = env_factory(websocket={"max_frame_bytes": 1024, "idle_timeout_s": 0.05})
    assert socket_close_code(env, {"origin": "https://evil.example"}) == 1008
    assert socket_close_code(env, send=json.dumps(chat(content="x" * 2000))) == 1009
    assert socket_close_code(env) == 1000  # idle: closed without a frame
    with env.http.websocket_connect("/v1/chat/ws", headers={"origin": "http://127.0.0.1:8000"}) as ws:
        ws.send_text(json.dumps(chat()))
        assert ws.receive_json()["type"] == "grounding"  # a RAG turn's citations come first
        assert ws.receive_json()["type"] == "delta"


def test_open_sockets_per_key_are_capped(env_factory):
    env = env_factory(websocket={"max_connections_per_key": 2, "idle_timeout_s": 2.0})  # a wrongly accepted one closes
    with env.http.websocket_connect("/v1/chat/ws"), env.http.websocket_connect("/v1/chat/ws"):
        assert socket_close_code(env) == 1013
    with env.http.websocket_connect("/v1/chat/ws") as ws:  # freed when the others closed
        ws.send_text(json.dumps(chat()))
        assert ws.receive_json()["type"] == "grounding"  # a RAG turn's citations come first
        assert ws.receive_json()["type"] == "delta"


def test_the_llm_judge_answers_within_the_keys_models(tmp_path):
    env = Env(tmp_path, text=json.dumps({"verdict": "yes", "reason": "stated"}), auth=True,
              graders={"enabled": True, "judge": "llm"})
    store = KeyStore(tmp_path / "keys.sqlite")
    narrow = {"authorization": f"Bearer {store.create('acme', ['test'], ['another-model'])[0]}"}
    wide = {"authorization": f"Bearer {store.create('acme', ['test'], ['m'])[0]}"}
    body = {"question": "What is a volcano?", "answer": "A rupture in the crust.", "passages": ["Volcanoes erupt."]}
    refused = env.http.post("/v1/grade", json=body, headers=narrow)
    assert refused.status_code == 403 and env.generator.calls == 0
    assert env.http.post("/v1/grade", json=body, headers=wide).status_code == 200
    assert env.generator.calls > 0 and {tuple(r.allowed_models) for r in env.generator.requests} == {("m",)}
