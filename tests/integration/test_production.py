"""The production layer without a language model: a retrieval-only app whose chain is the extractive
step alone, with conversation history on SQLite and on a real Redis server (each survives a gateway
restart), the graders on every grounded answer, and the explanation record of each answer."""

from __future__ import annotations

import httpx
import openai
import pytest
import ray
from ray import serve

from serving.app import build_app
from tests.integration.conftest import job_config, run_job
from tests.integration.serving_support import app_args, free_port, make_corpus, serve_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
BACKENDS = ("sqlite", "redis")


@pytest.fixture(scope="module")
def quotes(ray_cluster, tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("quotes")
    config = job_config(root)
    run_job(config, make_corpus(root))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for backend in BACKENDS:
        settings = serve_settings(config.indexes.root, port, primary=None, fallback=None)
        settings["router"] |= {"chain": [{"backend": "extractive"}]}
        settings["gateway"] |= {
            "history": {"backend": backend, "path": str(root / "history.sqlite"), "redis_url": redis_url},
            "graders": {"enabled": True},
            "cache": {"enabled": False},
        }
        settings["app_name"] = f"quotes-{backend}"
        serve.run(
            build_app(app_args(config.indexes.root, settings)),
            name=f"quotes-{backend}",
            route_prefix=f"/{backend}",
            blocking=False,
        )
    url = f"http://127.0.0.1:{port}"
    for backend in BACKENDS:
        wait_for(f"{url}/{backend}/readyz", lambda r: r.status_code == 200)
    yield {"url": url}
    serve.shutdown()


def client(quotes, backend: str = "sqlite") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{quotes['url']}/{backend}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(quotes, question: str, backend: str = "sqlite", **extra):
    return client(quotes, backend).chat.completions.create(
        model="rag:test", messages=[{"role": "user", "content": question}], extra_body=extra or None
    )


def test_the_extractive_step_answers_with_cited_sentences_of_the_passages(quotes):
    reply = ask(quotes, "When do spring tides happen?")
    assert "Spring tides happen at new and full moon" in reply.choices[0].message.content
    assert "[1]" in reply.choices[0].message.content
    assert reply.rayrag["backend"] == "extractive" and reply.rayrag["steps"] == ["extractive: answered"]
    with pytest.raises(openai.NotFoundError):  # no generator: only grounded requests can be answered
        client(quotes).chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}]
        )


def test_answers_are_graded_and_the_record_explains_them(quotes):
    response = httpx.post(
        f"{quotes['url']}/sqlite/v1/query", json={"query": "What is sourdough leavened by?", "index": "test"}
    )
    body = response.json()
    grades = body["grades"]
    assert grades["groundedness"]["verdict"] == "yes" and grades["relevance"]["verdict"] == "yes"
    assert grades["grounded"] and not grades["regenerated"]
    record = httpx.get(f"{quotes['url']}/sqlite/v1/records/{body['id']}").json()
    assert record["grades"]["groundedness"]["reason"] == grades["groundedness"]["reason"]
    assert record["steps"] == ["extractive: answered"] and record["chunks"][0]["source"] == "sourdough.md"
    assert record["chunks"][0]["score"] > 0 and record["prompt"] == "rag_answer@1"


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("Spring tides happen at new and full moon.", "yes"),
        ("The Eiffel Tower was finished in 1889 for a world fair in Paris.", "no"),
    ],
    ids=["grounded", "ungrounded"],
)
def test_grade_endpoint_gives_structured_verdicts(quotes, answer, verdict):
    body = {"question": "When do spring tides happen?", "answer": answer, "index": "test"}
    verdicts = httpx.post(f"{quotes['url']}/sqlite/v1/grade", json=body).json()
    assert verdicts["groundedness"]["verdict"] == verdict
    assert verdicts["groundedness"]["reason"] and verdicts["relevance"]["verdict"] in {"yes", "no"}


def restart_gateway(quotes, backend: str) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"quotes-{backend}#gateway" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
    wait_for(f"{quotes['url']}/{backend}/readyz", lambda r: r.status_code == 200, timeout_s=120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_is_kept_per_session_and_survives_a_gateway_restart(quotes, backend):
    session = f"conversation-{backend}"
    first = ask(quotes, "What is a volcano?", backend, session_id=session)
    second = ask(quotes, "And what is a stratovolcano?", backend, session_id=session)
    given = httpx.get(f"{quotes['url']}/{backend}/v1/records/{second.id}").json()["messages"]
    # what the generator received: the instructions with passages, the earlier turn, then the new question
    assert [m["role"] for m in given] == ["system", "user", "assistant", "user"]
    earlier = ["What is a volcano?", first.choices[0].message.content, "And what is a stratovolcano?"]
    assert [m["chars"] for m in given[1:]] == [len(text) for text in earlier]
    restart_gateway(quotes, backend)
    url = f"{quotes['url']}/{backend}/v1/sessions/{session}"
    stored = httpx.get(url).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
    assert stored["messages"][0]["content"] == "What is a volcano?"
    assert stored["messages"][1]["content"] == first.choices[0].message.content
    assert httpx.delete(url).json()["deleted"] is True
    assert httpx.get(url).status_code == 404
