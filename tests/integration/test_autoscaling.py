"""Autoscaling you can watch, read from Serve's own status and the answers' `steps`, never inferred
from latency: a bounded load ramp on `/v1/search` scales the retriever out and back in with no
request failing; a vLLM primary at zero replicas is started by the first request while the
llama.cpp fallback answers it; and a burst over the primary's queue spills to llama.cpp."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from ray import serve

from serving.app import build_app
from tests.integration.serving_support import app_args, free_port, indexed_corpus, serve_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
APP = "scaling"


def running(deployment: str = "retriever", app: str = APP) -> int:
    return serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0)


def until(predicate, timeout_s: float, what: str) -> None:
    """Wait for a state Serve reports (polled), failing with `what` if it never comes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout_s:.0f} s: {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scaling_app(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    config = indexed_corpus(root)
    port = free_port()
    settings = serve_settings(config.indexes.root, port, primary=None, fallback=None)
    settings["router"] |= {"chain": [{"backend": "extractive"}]}
    settings["retriever"]["deployment"] = {
        "num_cpus": 0, "max_ongoing_requests": 4,
        "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
                        "upscale_delay_s": 1, "downscale_delay_s": 3},
    }  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(app_args(config.indexes.root, settings)), name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/readyz", lambda r: r.status_code == 200)
    yield url
    serve.shutdown()


def test_a_load_ramp_scales_the_retriever_out_and_back_in_without_a_failed_request(scaling_app):
    assert running() == 1
    stop, outcomes, seen = threading.Event(), Counter(), [1]

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    reply = http.post(f"{scaling_app}/v1/search", json={"query": "What is a volcano?", "index": "test"})
                    outcomes[reply.status_code] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    clients = [threading.Thread(target=client, daemon=True) for _ in range(12)]  # 12 in flight: 6x the target
    for thread in clients:
        thread.start()
    try:
        until(lambda: seen.append(running()) or seen[-1] >= 2, 180, "a second retriever replica running")
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    until(lambda: running() == 1, 180, "the retriever back at one replica after the ramp")
    reply = httpx.post(f"{scaling_app}/v1/search", json={"query": "What is a volcano?", "index": "test"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["chunks"][0]["source"].endswith("volcanoes.md")
    assert max(seen) >= 2 and set(outcomes) == {200}, outcomes  # every request of the ramp answered


@pytest.fixture(scope="module")
def cold_primary(scaling_app, tmp_path_factory):
    """A second app on the same Serve instance: vLLM (CPU) may scale to zero and starts there, the
    llama.cpp fallback is kept at one replica, and the router sends vLLM two requests at most."""
    root = tmp_path_factory.mktemp("cold")
    config = indexed_corpus(root)
    settings = serve_settings(config.indexes.root, free_port())  # the gateway section names a port; Serve's is shared
    settings["primary"]["deployment"] = {"num_cpus": 0, "autoscaling": {"min_replicas": 0, "max_replicas": 1}}
    # two requests in flight to vLLM from the (one) router, then it spills to llama.cpp, the last step
    settings["router"] |= {"chain": [{"backend": "primary", "max_queue_depth": 2}, {"backend": "fallback"}]}
    settings["gateway"] |= {"cache": {"enabled": False}}
    serve.run(build_app(app_args(config.indexes.root, settings)), name="cold", route_prefix="/cold", blocking=False)
    url = f"{scaling_app}/cold"
    wait_for(f"{url}/readyz", lambda r: r.status_code == 200)  # the fallback is up; the primary is not waited for
    yield url
    serve.delete("cold")


def test_a_primary_at_zero_is_started_by_the_first_request_which_the_fallback_answers(cold_primary):
    query = {"query": "What is a volcano?", "index": "test", "max_tokens": 8}
    assert running("vllm", "cold") == 0
    first = httpx.post(f"{cold_primary}/v1/query", json=query, timeout=120).json()
    assert first["backend"] == "llama_cpp" and first["steps"][0] == "primary: skipped (scaled to zero: starting it)"
    until(lambda: running("vllm", "cold") == 1, 300, "Serve starting the vLLM replica the first request woke")
    until(lambda: primary_ready(cold_primary), 300, "the router seeing the started vLLM replica ready")
    later = httpx.post(f"{cold_primary}/v1/query", json=query, timeout=120).json()
    assert later["backend"] == "vllm" and later["steps"] == ["primary: answered"]


def primary_ready(url: str) -> bool:
    generators = httpx.get(f"{url}/readyz", timeout=30).json()["generators"]
    return any(g["backend"] == "vllm" and g["ready"] for g in generators)


def test_a_burst_over_the_primarys_queue_spills_to_the_fallback_and_none_fails(cold_primary):
    """Eight RAG questions at once against a router that sends vLLM two at most: vLLM answers some,
    llama.cpp the overflow (its steps say why vLLM was skipped), every one is answered; then a lone
    question goes back to vLLM. Red when the router queues on the primary instead of spilling."""
    httpx.post(f"{cold_primary}/v1/query", json={"query": "wake", "index": "test", "max_tokens": 1}, timeout=120)
    until(lambda: primary_ready(cold_primary), 300, "vLLM started and ready")  # at once after the cold-start test
    questions = ["What is a volcano?", "How does lava form?", "Where are volcanoes found?", "What is magma?",
                 "Why do volcanoes erupt?", "What is a caldera?", "What is an ash cloud?", "What is a hot spot?"]  # fmt: skip
    start, answers = threading.Barrier(len(questions)), {}

    def ask(question: str) -> None:
        start.wait()  # all eight leave together: the burst
        body = {"query": question, "index": "test", "max_tokens": 48}
        reply = httpx.post(f"{cold_primary}/v1/query", json=body, timeout=300)
        answers[question] = (reply.status_code, reply.json())

    burst = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(300)
    assert [status for status, _ in answers.values()] == [200] * len(questions), answers
    by = Counter(body["backend"] for _, body in answers.values())
    assert by["vllm"] >= 1 and by["llama_cpp"] >= 1 and by.total() == len(questions), by
    spilled = [body["steps"] for _, body in answers.values() if body["backend"] == "llama_cpp"]
    assert all(steps == ["primary: skipped (overloaded: 2 in flight)", "fallback: answered"] for steps in spilled)
    until(lambda: primary_ready(cold_primary), 120, "the router seeing vLLM ready after the burst")
    after = httpx.post(f"{cold_primary}/v1/query", json={"query": "What is a volcano?", "index": "test"}, timeout=120)
    assert (after.json()["backend"], after.json()["steps"]) == ("vllm", ["primary: answered"])
