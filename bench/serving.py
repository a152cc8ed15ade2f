"""Serving benchmarks, each a ratio against the bare library measured in the same run.

- search_rps_32c_over_bare: `/v1/search` requests/s at 32 concurrent Locust users over the bare
  libraries doing the same work sequentially in this process, as a user would write it
  (sentence-transformers on PyTorch encodes one query, FAISS searches) on the same queries, for
  5 s before the app is measured and 5 s right after the load (their mean; both recorded)
  (`search_p99_over_p50` at 32 clients beside it). `search_rps_32c_over_inprocess` divides by the
  same loop on rayrag's own embedder (OpenVINO on CPU) instead: what batching and the hops add or cost.
  The load is measured after rounds of unmeasured load (`--warm-seconds` each) that go on until the
  gateway has scaled to its `max_replicas` (at most 4 rounds); `search_gateway_replicas` is how many
  were running when the measured load began, `search_warm_s` the warm-up it took.
- search_http_overhead_ms: one client, `/v1/search` p50 minus the in-process encode (rayrag's
  embedder, as the retriever runs it) + search p50 on the same queries, the HTTP search and the floor
  below sampled in turn (`interleaved_p50`: this machine's speed drifts between phases); the searches over HTTP (and
  Locust's) ask for `mode: dense`, the work the in-process and bare sides do (hybrid's BM25 is the
  retriever's work, not the hops'), and `search_retriever_took_p50_ms` is the replica's own time; `http_floor_p50_ms` is a
  `GET /healthz` (the proxy hop every request pays) and `search_overhead_over_floor_ms` what the
  gateway and the handle hop add beyond it.
- fallback_vs_llama_cpp: completion tokens/s through the app (router -> llama.cpp deployment)
  divided by tokens/s of a bare `llama_cpp.Llama` on the same GGUF and prompt.
- cache_hit_vs_miss: p50 of a RAG chat answered from the semantic cache over the median of several
  RAG chats answered by retrieval + generation (distinct questions, each a miss);
  `cache_hit_gateway_p50_ms` is the gateway's own time (its `server-timing` header), and
  `cache_hit_over_floor_ms` a hit's p50 over a `GET /healthz` p50 sampled in turn with it.
- cold_start_s: seconds from launching `serve run configs/serve.yaml` (its own file, with only the
  index root and port changed) to the first `/v1/query` answered by a model generator (not the
  extractive step); `cold_start_primary_s`: until vLLM itself answers.

    python bench/serving.py [--index-root DIR --index NAME] [--requests 50]

The app is started with `serve run` in a subprocess on a free port, on the sample corpus indexed
into a temporary root unless an index is given. Latency distributions go to bench/results/latency.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import RESULTS, Timer, bare_sentence_transformer, record
from bench.load import load_values, locust_search
from bench.plot import latency_png
from indexes.embedder import EmbedderConfig, load_embedder
from indexes.reader import IndexVersion
from pipelines.corpus import SAMPLE_DIR
from serving.generator.models import gguf_path

LATENCY_PNG = RESULTS.with_name("latency.png")
QUERIES = [
    "How do I create a virtual environment?",
    "What does secrets.token_hex do?",
    "list vs tuple",
    "read a CSV file",
]
PROMPT = "Write three sentences about the Python programming language."


SERVE_YAML = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"
MODEL_BACKENDS = {"vllm", "llama_cpp"}
WARM_ROUNDS = 4


def serve_yaml(path: Path, index_root: Path, index: str, port: int, primary: bool, extra: dict | None = None) -> Path:
    """configs/serve.yaml as shipped, pointed at the benchmark's index and port; without `primary` the
    vLLM deployment is left out, so the fallback serves alone, with the semantic cache on (with the
    primary it stays off: a cached early answer would hide which backend answers once vLLM is up);
    `extra` sets more keys the same way (bench/autoscaling.py's autoscaling)."""
    spec = yaml.safe_load(SERVE_YAML.read_text())
    spec["http_options"] |= {"host": "127.0.0.1", "port": port}
    app = spec["applications"][0]
    overrides = {"indexes.root": str(index_root), "serve.retriever.indexes": [index], "serve.gateway.port": port,
                 "serve.gateway.max_tokens_cap": 512, "serve.gateway.cache.enabled": not primary,
                 "serve.gateway.cache.path": str(path.parent / f"{path.stem}-cache.sqlite")}  # fmt: skip
    if not primary:
        overrides["serve.primary"] = None
        app["args"]["set"] = {k: v for k, v in app["args"]["set"].items() if not k.startswith("serve.primary.")}
    app["args"]["set"] = app["args"]["set"] | overrides | (extra or {})
    path.write_text(yaml.safe_dump(spec))
    return path


@contextmanager
def serve_run(config: Path, env: dict[str, str] | None = None):
    """`serve run config` in a subprocess (a fresh local Ray, with `env` added), stopped afterwards."""
    environment = os.environ | {"HF_HUB_OFFLINE": "1"} | (env or {})
    server = subprocess.Popen(["serve", "run", str(config)], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield
    finally:
        server.terminate()
        server.wait(60)
        subprocess.run(["ray", "stop", "--force"], capture_output=True)


REPLICAS = """
import ray
from ray import serve
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print(serve.status().applications[{app!r}].deployments[{deployment!r}].replica_states.get("RUNNING", 0))
"""


def max_gateways(config: Path) -> int:
    """The most gateway replicas the served config file (one `serve_yaml` wrote) scales to."""
    from serving.app import load_serving

    app = yaml.safe_load(config.read_text())["applications"][0]["args"]
    return load_serving(app).serve.gateway.deployment.autoscaling.max_replicas


def running_replicas(deployment: str, app: str = "rayrag") -> int | None:
    """Replicas of `deployment` RUNNING now, from Serve's own `serve.status()` in a driver of its own
    (this process stays off the cluster it stops); None when it cannot say."""
    code = REPLICAS.format(app=app, deployment=deployment)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else None


def wait(predicate, timeout_s: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            if predicate():
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError("the app did not answer in time")


SAMPLES_MS: dict[str, list[float]] = {}  # sequential latencies per path, for the PNG


def interleaved_p50(n: int, samples: dict[str, str], **calls) -> dict[str, float]:
    """p50 seconds of each call, the calls taken in turn on the same query: this machine's speed
    drifts between phases (steal time), and parts of a difference sampled minutes apart would move
    it. `samples` names the calls whose latencies go to the PNG."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(n):
        for name, call in calls.items():
            with Timer() as t:
                call(QUERIES[i % len(QUERIES)])
            times[name].append(t.seconds)
    for name, label in samples.items():
        SAMPLES_MS[label] = [t * 1000 for t in times[name]]
    return {name: statistics.median(values) for name, values in times.items()}


RATE_S = 5.0  # each sequential-rate window: long enough to ride out a moment's drift


def sequential_rps(search, seconds: float = RATE_S) -> float:
    """Searches per second, one after another for `seconds`."""
    search(QUERIES[0])  # warm-up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        search(QUERIES[done % len(QUERIES)])
        done += 1
    return done / elapsed


def bare_searches(index_root: Path, index: str) -> dict:
    """The same search in this process: rayrag's embedder (`inprocess`) and the bare libraries as a
    user would write them, sentence-transformers on PyTorch and FAISS (`bare`)."""
    embedder = load_embedder(EmbedderConfig())
    torch_model = bare_sentence_transformer(embedder.config)
    version = IndexVersion.open_current(index_root, index)
    return {
        "inprocess": lambda q: version.vectors.search(embedder.encode([q]), 5),
        "bare": lambda q: version.vectors.search(torch_model.encode([q], normalize_embeddings=True), 5),
    }


def search_overhead(url: str, index: str, n: int, searches: dict) -> dict[str, float]:
    """One client over HTTP against the same work in-process, and the bare sequential rates."""
    client = httpx.Client(timeout=30)
    inprocess_search = searches["inprocess"]
    rates = {"search_bare_sequential_rps": sequential_rps(searches["bare"]),
             "search_inprocess_sequential_rps": sequential_rps(inprocess_search)}  # fmt: skip
    took: list[float] = []  # the retriever's own time for each search (its `took_ms`)

    def search_http(q: str) -> None:
        reply = client.post(f"{url}/v1/search", json={"query": q, "index": index, "top_k": 5, "mode": "dense"})
        took.append(reply.raise_for_status().json()["took_ms"])

    healthz = lambda _: client.get(f"{url}/healthz").raise_for_status()  # noqa: E731
    # the in-process side apart: its encoder's threads would still hold the CPU during the next HTTP call
    bare = interleaved_p50(n, {"bare": "search in-process (encode + faiss)"}, bare=inprocess_search)["bare"]
    p = interleaved_p50(n, {"http": "/v1/search, 1 client"}, floor=healthz, http=search_http)
    floor, http = p["floor"], p["http"]
    return {
        "search_http_p50_ms": http * 1000, "search_bare_p50_ms": bare * 1000,
        "search_retriever_took_p50_ms": statistics.median(took),
        **rates, "http_floor_p50_ms": floor * 1000,
        "search_http_overhead_ms": (http - bare) * 1000, "search_overhead_over_floor_ms": (http - bare - floor) * 1000,
    }  # fmt: skip


def fallback_speed(url: str, max_tokens: int = 128) -> dict[str, float]:
    """The same chat request, greedy, through the app and through a bare Llama (GGUF chat template)."""
    from llama_cpp import Llama

    messages = [{"role": "user", "content": PROMPT}]
    llm = Llama(model_path=str(gguf_path("smollm2-135m-instruct")), n_ctx=2048, n_threads=2, verbose=False)
    with Timer() as t:
        out = llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0)
    bare = out["usage"]["completion_tokens"] / t.seconds
    del llm
    body = {"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    with Timer() as t:
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).raise_for_status().json()
    app = reply["usage"]["completion_tokens"] / t.seconds
    assert reply["rayrag"]["backend"] == "llama_cpp", reply["rayrag"]
    return {"fallback_tok_s": app, "llama_cpp_tok_s": bare, "fallback_vs_llama_cpp": app / bare,
            "fallback_tokens": reply["usage"]["completion_tokens"], "llama_cpp_tokens": out["usage"]["completion_tokens"]}  # fmt: skip


MISS_QUESTIONS = [
    "How do I sort a list of dictionaries by a key?",
    "What is the difference between a module and a package?",
    "How do I read environment variables?",
    "Why are default arguments shared between calls?",
    "How do I format a float with two decimals?",
]


def cache_speed(url: str, index: str, n: int) -> dict[str, float]:
    """RAG chats answered by retrieval + generation (distinct questions: each a miss), then one of
    them again from the semantic cache: the same text (found without embedding) and a differently
    cased one (embedded, then matched)."""
    client = httpx.Client(timeout=300)

    def chat(question: str) -> httpx.Response:
        body = {"model": f"rag:{index}", "messages": [{"role": "user", "content": question}], "max_tokens": 64}
        return client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()

    misses = []
    for question in MISS_QUESTIONS:
        with Timer() as miss:
            assert chat(question).headers["x-rayrag-cache"] == "miss"
        misses.append(miss.seconds)

    def hits(question: str) -> tuple[float, float]:
        """p50 seconds end to end, and p50 ms the gateway itself spent (its `server-timing`)."""
        inside: list[float] = []

        def hit(_):
            headers = chat(question).headers
            assert headers["x-rayrag-cache"] == "hit"
            inside.append(float(headers["server-timing"].split("dur=")[1]))

        label = f"cache hit ({'same text' if question == asked else 'embedded'})"
        healthz = lambda _: client.get(f"{url}/healthz").raise_for_status()  # noqa: E731
        p = interleaved_p50(n, {"hit": label}, floor=healthz, hit=hit)
        return p["hit"], p["floor"], statistics.median(inside)

    asked = MISS_QUESTIONS[0]
    exact_s, exact_floor_s, exact_inside = hits(asked)
    embedded_s, _, embedded_inside = hits(asked.lower())  # MiniLM is uncased: cosine 1.0, but not the same text
    return {
        "cache_hit_p50_ms": exact_s * 1000,
        "cache_hit_over_floor_ms": (exact_s - exact_floor_s) * 1000,
        "cache_hit_gateway_p50_ms": exact_inside,
        "cache_embedded_hit_p50_ms": embedded_s * 1000,
        "cache_embedded_hit_gateway_p50_ms": embedded_inside,
        "cache_miss_median_ms": statistics.median(misses) * 1000,
        "cache_misses": len(misses),
        "cache_hit_vs_miss": exact_s / statistics.median(misses),
    }


def answered_by(url: str, query: dict) -> str | None:
    response = httpx.post(f"{url}/v1/query", json=query, timeout=60)
    return response.json()["backend"] if response.status_code == 200 else None


def build_sample_index(root: Path) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "rayrag",
        "index",
        "--source",
        str(SAMPLE_DIR),
        "--index",
        "bench",
        "--set",
        f"indexes.root={root}",
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path)
    parser.add_argument("--index", default="bench")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--users", type=int, default=32, help="concurrent Locust users for the search load")
    parser.add_argument("--load-seconds", type=int, default=20)
    parser.add_argument(
        "--warm-seconds",
        type=int,
        default=20,
        help="unmeasured load first, so autoscaling settles and the figures are steady state",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    url = f"http://127.0.0.1:{args.port}"
    query = {"query": QUERIES[0], "index": args.index, "max_tokens": 8}
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.index_root or Path(tmp) / "indexes").resolve()
        if args.index_root is None:
            build_sample_index(root)
        started = time.perf_counter()
        with serve_run(serve_yaml(Path(tmp) / "serve.yaml", root, args.index, args.port, primary=True)):
            wait(lambda: answered_by(url, query) in MODEL_BACKENDS)  # not the extractive step
            values = {"cold_start_s": time.perf_counter() - started}
            wait(lambda: answered_by(url, query) == "vllm")
            values["cold_start_primary_s"] = time.perf_counter() - started
        fallback = serve_yaml(Path(tmp) / "fallback.yaml", root, args.index, args.port, primary=False)
        with serve_run(fallback):
            wait(lambda: httpx.post(f"{url}/v1/query", json=query, timeout=60).status_code == 200)
            searches = bare_searches(root, args.index)
            values |= search_overhead(url, args.index, args.requests, searches)
            values |= fallback_speed(url)
            values |= cache_speed(url, args.index, args.requests)
            # a gateway that autoscales adds replicas about half a minute into a load: warm-up rounds
            # go on until it has its max_replicas (at most WARM_ROUNDS), and the figure says how many
            # were serving when the measured load began (the local default runs two from the start)
            wanted, rounds = max_gateways(fallback), 0
            while args.warm_seconds and rounds < WARM_ROUNDS:
                locust_search(url, args.index, Path(tmp), users=args.users, seconds=args.warm_seconds)
                rounds += 1
                values["search_gateway_replicas"] = running_replicas("gateway")
                if (values["search_gateway_replicas"] or 0) >= wanted:
                    break
            values["search_warm_s"] = rounds * args.warm_seconds
            load = locust_search(url, args.index, Path(tmp), users=args.users, seconds=args.load_seconds)
            # the bare rate again right after the load, and their mean as the denominator: a rate
            # taken minutes before alone would carry the machine's drift into the ratio
            values["search_bare_rps_before"] = values["search_bare_sequential_rps"]
            values["search_bare_rps_after"] = sequential_rps(searches["bare"])
            values["search_bare_sequential_rps"] = (
                values["search_bare_rps_before"] + values["search_bare_rps_after"]
            ) / 2
            values |= load_values(load, values["search_bare_sequential_rps"], args.users)
            values[f"search_rps_{args.users}c_over_inprocess"] = load["rps"] / values["search_inprocess_sequential_rps"]
        png = latency_png(
            SAMPLES_MS, {f"/v1/search, {args.users} clients (Locust)": load["percentiles_ms"]}, LATENCY_PNG
        )
        context = {"index": args.index, "requests": args.requests, "users": args.users, "warm_s": args.warm_seconds,
                   "load_s": args.load_seconds, "latency_png": png.name}  # fmt: skip
        record("serving", values, context, started_load=load_at_start)


if __name__ == "__main__":
    main()
