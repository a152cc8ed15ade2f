"""Autoscaling you can watch (issue 23): the shipped app under a load ramp and a burst, sampled over time.

The app is `configs/serve.yaml` as shipped (vLLM on CPU, the llama.cpp fallback) with the autoscaling
an operator would set to watch it, as config only (`--set`, see `OVERRIDES`): the retriever at
`min_replicas: 1, max_replicas: 3, target_ongoing_requests: 2` with short up/down delays, and the
primary's chain step holding `--queue-depth` requests at most before the router spills to llama.cpp
(then the extractive step, past llama.cpp's own depth). Two phases:

- ramp: `/v1/search` clients step up to `--clients`, hold until Serve runs a second retriever
  replica (and `--hold-s` more), then stop; the app is watched until the retriever is back at one.
- burst: `--burst` RAG questions at once on `/v1/query`; vLLM answers what its queue allows and
  llama.cpp the overflow; then single questions until one is answered by vLLM again.

Every second: the running replicas of each deployment (Serve's own `serve.status()`), the
requests in flight from the clients (the queue the app holds), the router's in-flight count per
chain step (`ray_rayrag_in_flight`, Ray's metrics at a 1 s report interval), p50/p99 of the
requests finished in that second, and the answers by backend. Headline figures: `scale_out_s`
(ramp start to the second retriever replica running), `scale_in_s` (ramp end to one replica),
`failed_requests` (any non-200 or transport error in either phase; must be 0) and `spill_share`
(the burst's answers given by the fallback). The timeline goes to bench/results/autoscaling.json
and autoscaling.png.

    python bench/autoscaling.py [--clients 12] [--burst 10] [--queue-depth 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import RESULTS, record
from bench.plot import autoscaling_png
from bench.serving import QUERIES, answered_by, build_sample_index, serve_run, serve_yaml, wait

TIMELINE = RESULTS.with_name("autoscaling.json")
PNG = RESULTS.with_name("autoscaling.png")
DEPLOYMENTS = ("gateway", "retriever", "router", "vllm", "llama_cpp")
QUESTIONS = ["What is a list comprehension?", "How do I open a file?", "What does enumerate do?",
             "How do I copy a dictionary?", "What is a virtual environment?", "How do I sort a list?",
             "What is a generator?", "How do I handle an exception?"]  # fmt: skip
IN_FLIGHT = re.compile(r'^ray_rayrag_in_flight\{[^}]*step="(\w+)"[^}]*\} ([0-9.e+-]+)$', re.MULTILINE)


def overrides(queue_depth: int) -> dict:
    """The autoscaling to watch, as keys of configs/default.yaml (what `rayrag --set` takes)."""
    return {
        "serve.retriever.placement": "deployment",  # replicas of its own, which scale apart from the gateway
        "serve.retriever.deployment.num_cpus": 0.25,  # three replicas fit beside the rest on 2 logical CPUs
        "serve.retriever.deployment.max_ongoing_requests": 4,
        "serve.retriever.deployment.autoscaling": {
            "min_replicas": 1,
            "max_replicas": 3,
            "target_ongoing_requests": 2,
            "upscale_delay_s": 1,
            "downscale_delay_s": 5,
        },
        "serve.router.chain": [
            {"backend": "primary", "max_queue_depth": queue_depth},
            {"backend": "fallback"},
            {"backend": "extractive"},
        ],
    }


class Watch:
    """The load's outcomes and the app's state, sampled once a second on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.url, self.started = url, time.monotonic()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.in_flight: Counter = Counter()  # phase -> requests sent and not yet answered
        self.finished: list[tuple[float, float, str]] = []  # (seconds since start, latency ms, backend or error)
        self.timeline: list[dict] = []
        self.replicas: dict[str, int] = {}
        self.metrics_url = metrics_url()

    def now(self) -> float:
        return time.monotonic() - self.started

    def request(self, phase: str, http: httpx.Client, path: str, body: dict) -> str:
        """One request, counted in flight and by outcome: the backend that answered, or the error."""
        with self.lock:
            self.in_flight[phase] += 1
        sent = time.perf_counter()
        try:
            reply = http.post(f"{self.url}{path}", json=body)
            outcome = (
                reply.json().get("backend", "retriever") if reply.status_code == 200 else f"http {reply.status_code}"
            )
        except (httpx.HTTPError, ValueError) as exc:
            outcome = f"error {type(exc).__name__}"
        with self.lock:
            self.in_flight[phase] -= 1
            self.finished.append((self.now(), (time.perf_counter() - sent) * 1000, outcome))
        return outcome

    def sample(self) -> None:
        from ray import serve

        while not self.stop.is_set():
            at = self.now()
            try:
                deployments = serve.status().applications["rayrag"].deployments
                self.replicas = {
                    n: deployments[n].replica_states.get("RUNNING", 0) for n in DEPLOYMENTS if n in deployments
                }
            except Exception:  # noqa: BLE001 - the controller busy for a moment: keep the last count
                pass
            with self.lock:
                window = [f for f in self.finished if at - 1 < f[0] <= at]
                in_flight = dict(self.in_flight)
            latencies = sorted(ms for _, ms, _ in window)
            self.timeline.append({
                "t": round(at, 2), "replicas": dict(self.replicas), "client_in_flight": in_flight,
                "router_in_flight": self.router_in_flight(),
                "p50_ms": statistics.median(latencies) if latencies else None,
                "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
                "answers": dict(Counter(outcome for _, _, outcome in window)),
            })  # fmt: skip
            self.stop.wait(max(0.0, 1 - (self.now() - at)))

    def router_in_flight(self) -> dict[str, float]:
        if self.metrics_url is None:
            return {}
        try:
            text = httpx.get(self.metrics_url, timeout=5).text
        except httpx.HTTPError:
            return {}
        steps: dict[str, float] = defaultdict(float)
        for step, value in IN_FLIGHT.findall(text):  # one line per router replica
            steps[step] += float(value)
        return dict(steps)

    def failed(self) -> int:
        return sum(1 for *_, outcome in self.finished if outcome.startswith(("http", "error")))


def metrics_url() -> str | None:
    import ray

    port = next((n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive")), None)
    return f"http://127.0.0.1:{port}/metrics" if port else None


def running(watch: Watch, deployment: str) -> int:
    return watch.replicas.get(deployment, 0)


def until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def ramp(watch: Watch, index: str, clients: int, hold_s: float) -> dict[str, float]:
    """Search clients step up to `clients`; hold until a second retriever replica runs, then `hold_s`."""
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                body = {"query": QUERIES[n % len(QUERIES)], "index": index, "top_k": 5}
                watch.request("search", http, "/v1/search", body)

    threads = []
    started = watch.now()
    for n in range(clients):  # one more client every half second: a ramp, not a step
        threads.append(threading.Thread(target=client, args=(n,), daemon=True))
        threads[-1].start()
        time.sleep(0.5)
    out = until(lambda: running(watch, "retriever") >= 2, 240)
    scale_out_s = watch.now() - started if out else float("nan")
    peak = running(watch, "retriever")
    held = watch.now()
    while watch.now() - held < hold_s:
        peak = max(peak, running(watch, "retriever"))
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(120)
    ended = watch.now()
    back = until(lambda: running(watch, "retriever") == 1, 300)
    return {"scale_out_s": scale_out_s, "scale_in_s": watch.now() - ended if back else float("nan"),
            "peak_retriever_replicas": peak, "ramp_clients": clients}  # fmt: skip


def burst(watch: Watch, index: str, size: int) -> dict[str, float]:
    """`size` RAG questions at once; then one at a time until vLLM answers again."""
    gate, outcomes = threading.Barrier(size), []

    def ask(n: int) -> None:
        gate.wait()
        body = {"query": QUESTIONS[n % len(QUESTIONS)], "index": index, "max_tokens": 64}
        with httpx.Client(timeout=300) as http:
            outcomes.append(watch.request("burst", http, "/v1/query", body))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    by = Counter(outcomes)
    after, tries = None, 0
    with httpx.Client(timeout=300) as http:
        while after != "vllm" and tries < 10:  # the burst is over: new questions go back to the primary
            after, tries = watch.request("after", http, "/v1/query", {"query": QUESTIONS[0], "index": index}), tries + 1
    return {"burst_requests": size, "burst_by_vllm": by["vllm"], "burst_by_llama_cpp": by["llama_cpp"],
            "burst_by_extractive": by["extractive"], "spill_share": by["llama_cpp"] / size, "after_burst_tries_to_vllm": tries if after == "vllm" else -1}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--clients", type=int, default=12, help="search clients at the top of the ramp")
    parser.add_argument("--hold-s", type=float, default=15, help="load held after the second replica runs")
    parser.add_argument("--burst", type=int, default=10, help="RAG questions sent at once")
    parser.add_argument("--queue-depth", type=int, default=2, help="the primary chain step's max_queue_depth")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    url, index = f"http://127.0.0.1:{args.port}", "bench"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "indexes"
        build_sample_index(root)
        config = serve_yaml(
            Path(tmp) / "serve.yaml", root, index, args.port, primary=True, extra=overrides(args.queue_depth)
        )
        with serve_run(config, env={"RAY_metrics_report_interval_ms": "1000"}):
            query = {"query": QUERIES[0], "index": index, "max_tokens": 8}
            wait(lambda: answered_by(url, query) == "vllm")
            import ray

            ray.init(address="auto", logging_level="WARNING", log_to_driver=False)
            watch = Watch(url)
            sampler = threading.Thread(target=watch.sample, daemon=True)
            sampler.start()
            until(lambda: bool(watch.replicas), 30)
            values = ramp(watch, index, args.clients, args.hold_s)
            values |= burst(watch, index, args.burst)
            watch.stop.set()
            sampler.join(10)
            ray.shutdown()
    values["failed_requests"] = watch.failed()
    values["requests"] = len(watch.finished)
    TIMELINE.write_text(
        json.dumps({"phases": ["search ramp", "rag burst"], "timeline": watch.timeline}, indent=1) + "\n"
    )
    autoscaling_png(watch.timeline, PNG)
    context = vars(args) | {"overrides": overrides(args.queue_depth), "timeline": TIMELINE.name, "png": PNG.name}
    record("autoscaling", values, context, started_load=load_at_start)


if __name__ == "__main__":
    main()
