"""Serving benchmarks, each a ratio against the bare library measured in the same run.

- search_http_overhead: p50 of `/v1/search` over HTTP (proxy -> gateway -> retriever) divided by
  the p50 of the same query embedded and searched in-process (SentenceTransformer.encode + faiss).
- fallback_vs_llama_cpp: completion tokens/s through `/v1/completions` (router -> llama.cpp
  deployment) divided by tokens/s of a bare `llama_cpp.Llama` on the same GGUF and prompt.
- cache_hit_vs_miss: p50 of a RAG chat answered from the semantic cache over the same chat answered
  by retrieval + generation (`cache_hit_p50_ms` is the absolute figure; `cache_hit_in_gateway_p50_ms`
  is the gateway's own time from its `server-timing` header, `http_floor_p50_ms` a `GET /healthz`, the
  proxy hop any request pays).
- search_p50/p99 at 32 clients (`search_p99_over_p50`, `search_http_overhead_ms` = that p50 minus
  the in-process p50): Locust, headless, 32 users posting `/v1/search` back to back (bench/load.py).
  Latency distributions are plotted to bench/results/latency.png.
- cold_start_s: seconds from launching `serve run <yaml>` to the first answered `/v1/query`
  (and `cold_start_primary_s`: until vLLM itself answers), for the configs/serve.yaml app.

    python bench/serving.py [--index-root DIR --index NAME] [--requests 50]

The app is started with `serve run` in a subprocess on a free port, on the sample corpus indexed
into a temporary root unless an index is given.
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

from bench.harness import RESULTS, Timer, record
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


def serve_yaml(path: Path, index_root: Path, index: str, port: int, primary: bool) -> Path:
    overrides = {"retriever.root": str(index_root), "retriever.indexes": [index], "gateway.port": port,
                 "gateway.max_tokens_cap": 512, "gateway.cache.enabled": True,
                 "gateway.cache.path": str(path.parent / f"{path.stem}-cache.sqlite")}  # fmt: skip
    overrides |= {"primary.model": "smollm2-135m-instruct"} if primary else {}
    app = {"name": "rayrag", "route_prefix": "/", "import_path": "serving.app:build_app",
           "args": {"config": "configs/default.yaml", "set": overrides}}  # fmt: skip
    path.write_text(yaml.safe_dump({"http_options": {"host": "127.0.0.1", "port": port}, "applications": [app]}))
    return path


@contextmanager
def serve_run(config: Path):
    """`serve run config` in a subprocess (a fresh local Ray), stopped afterwards."""
    server = subprocess.Popen(["serve", "run", str(config)], env=os.environ | {"HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield
    finally:
        server.terminate()
        server.wait(60)
        subprocess.run(["ray", "stop", "--force"], capture_output=True)


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


def p50(fn, n: int, name: str | None = None) -> float:
    times = []
    for i in range(n):
        with Timer() as t:
            fn(QUERIES[i % len(QUERIES)])
        times.append(t.seconds)
    if name:
        SAMPLES_MS[name] = [t * 1000 for t in times]
    return statistics.median(times)


def search_overhead(url: str, index_root: Path, index: str, n: int) -> dict[str, float]:
    embedder = load_embedder(EmbedderConfig())
    version = IndexVersion.open_current(index_root, index)
    client = httpx.Client(timeout=30)
    bare = p50(lambda q: version.vectors.search(embedder.encode([q]), 5), n, "search in-process (encode + faiss)")
    http = p50(
        lambda q: client.post(f"{url}/v1/search", json={"query": q, "index": index, "top_k": 5}).raise_for_status(),
        n,
        "/v1/search, 1 client",
    )
    return {"search_http_p50_ms": http * 1000, "search_bare_p50_ms": bare * 1000, "search_http_overhead": http / bare}


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


def cache_speed(url: str, index: str, n: int) -> dict[str, float]:
    """A RAG chat answered once (miss: retrieve + generate), then from the semantic cache: the same
    question again (found by its text) and a differently cased one (embedded, then matched)."""
    asked = QUERIES[1]
    body = {"model": f"rag:{index}", "messages": [{"role": "user", "content": asked}], "max_tokens": 64}
    with Timer() as miss:
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).headers["x-rayrag-cache"] == "miss"
    client = httpx.Client(timeout=30)

    def hits(question: str) -> tuple[float, float]:
        """p50 seconds end to end, and p50 ms the gateway itself spent (its `server-timing`)."""
        inside: list[float] = []

        def hit(_):
            sent = body | {"messages": [{"role": "user", "content": question}]}
            headers = client.post(f"{url}/v1/chat/completions", json=sent).headers
            assert headers["x-rayrag-cache"] == "hit"
            inside.append(float(headers["server-timing"].split("dur=")[1]))

        return p50(hit, n, f"cache hit ({'same text' if question == asked else 'embedded'})"), statistics.median(inside)

    exact_s, exact_inside = hits(asked)
    embedded_s, embedded_inside = hits(asked.lower())  # MiniLM is uncased: cosine 1.0, but not the same text
    floor_s = p50(lambda _: client.get(f"{url}/healthz").raise_for_status(), n)
    return {
        "cache_hit_p50_ms": exact_s * 1000,
        "cache_hit_in_gateway_p50_ms": exact_inside,
        "cache_embedded_hit_p50_ms": embedded_s * 1000,
        "cache_embedded_hit_in_gateway_p50_ms": embedded_inside,
        "http_floor_p50_ms": floor_s * 1000,  # GET /healthz: the proxy hop every request pays
        "cache_miss_ms": miss.seconds * 1000,
        "cache_hit_vs_miss": exact_s / miss.seconds,
    }


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
        f"index.root={root}",
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
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    query = {"query": QUERIES[0], "index": args.index, "max_tokens": 8}
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.index_root or Path(tmp) / "indexes").resolve()
        if args.index_root is None:
            build_sample_index(root)
        started = time.perf_counter()
        with serve_run(serve_yaml(Path(tmp) / "serve.yaml", root, args.index, args.port, primary=True)):
            wait(lambda: httpx.post(f"{url}/v1/query", json=query, timeout=60).status_code == 200)
            values = {"cold_start_s": time.perf_counter() - started}
            wait(lambda: httpx.post(f"{url}/v1/query", json=query, timeout=60).json()["backend"] == "vllm")
            values["cold_start_primary_s"] = time.perf_counter() - started
        with serve_run(serve_yaml(Path(tmp) / "fallback.yaml", root, args.index, args.port, primary=False)):
            wait(lambda: httpx.post(f"{url}/v1/query", json=query, timeout=60).status_code == 200)
            values |= search_overhead(url, root, args.index, args.requests)
            values |= fallback_speed(url)
            values |= cache_speed(url, args.index, args.requests)
            load = locust_search(url, args.index, Path(tmp), users=args.users, seconds=args.load_seconds)
            values |= load_values(load, values["search_bare_p50_ms"], args.users)
        png = latency_png(
            SAMPLES_MS, {f"/v1/search, {args.users} clients (Locust)": load["percentiles_ms"]}, LATENCY_PNG
        )
        record("serving", values, {"index": args.index, "requests": args.requests, "latency_png": str(png)})


if __name__ == "__main__":
    main()
