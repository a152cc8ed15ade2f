"""ann_1m: the configured ANN index (IVF-PQ or HNSW) on 1 million synthetic 384-d vectors.

Reports build seconds (train + add through `indexes.faiss_index.FaissIndex`), peak RSS, recall@10
against exact inner-product search (a bare `faiss.IndexFlatIP` over the same vectors, the ground
truth), and single-query p50 of the ANN index, of exact search, and of the bare faiss index inside
our wrapper (`wrapper_overhead`: FaissIndex.search p50 / the raw faiss call's p50).

Vectors are a Gaussian mixture (normalised), not uniform noise: uniformly random 384-d vectors have
no neighbourhood structure, and every ANN index scores near-zero recall on them, which says nothing
about embeddings. Queries come from the same mixture.

    python bench/ann.py [--n 1000000] [--index-type ivf_pq|hnsw] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import RESULTS, Timer, record
from indexes.backend_config import FaissConfig
from indexes.faiss_index import FaissIndex
from rayrag.config import load_config


def mixture(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim), dtype=np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: one 1M x 384 temporary would double peak memory
        stop = min(n, start + 100_000)
        vectors[start:stop] = means[rng.integers(0, centres, stop - start)]
        vectors[start:stop] += 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def p50_ms(search, queries: np.ndarray) -> float:
    times = []
    for row in queries:
        started = time.perf_counter()
        search(row[None, :])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-type", choices=["ivf_pq", "hnsw"], default=None,
                        help="default: backend.index_type of the config when it is an ANN index, else ivf_pq")  # fmt: skip
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file the run is appended to")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="index_job.backend.key=value")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]
    configured = load_config(args.config, args.overrides).index_job.backend
    kind = args.index_type or (configured.index_type if configured.index_type != "flat" else "ivf_pq")
    config = FaissConfig(**(configured.model_dump() | {"index_type": kind}))

    data = mixture(args.n, args.dim, centres=max(16, args.n // 1000), seed=0)
    queries = mixture(args.queries, args.dim, centres=max(16, args.n // 1000), seed=0)[: args.queries]
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(data)
    _, truth = exact.search(queries, 10)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    index = FaissIndex.create(args.dim, config)
    with Timer() as build:
        if index.needs_training:
            sample = data[np.random.default_rng(1).choice(args.n, min(args.n, 100_000), replace=False)]
            index.train(sample)
        index.add(np.arange(args.n, dtype=np.int64), data)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found, _ = index.search(queries, 10)
    ann_ms = p50_ms(lambda q: index.search(q, 10), queries)
    bare_ms = p50_ms(lambda q: index.index.search(q, 10), queries)
    exact_ms = p50_ms(lambda q: exact.search(q, 10), queries)
    values = {
        "ann_build_s": build.seconds,
        "ann_peak_rss_mb": peak_rss_mb,
        "ann_rss_growth_mb": peak_rss_mb - rss_before,
        "ann_recall_at_10": recall_at_10(found, truth),
        "ann_query_p50_ms": ann_ms,
        "exact_query_p50_ms": exact_ms,
        "ann_vs_exact_query": ann_ms / exact_ms,
        "wrapper_overhead": ann_ms / bare_ms,
    }
    record(f"ann_{args.index_type}", values, {"n": args.n, "dim": args.dim, "queries": args.queries, "index": config.model_dump()},
           path=args.results, started_load=load_at_start)  # fmt: skip
    return values


if __name__ == "__main__":
    main()
