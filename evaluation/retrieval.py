"""`rayrag eval retrieval`: index a labelled dataset with the normal index job, search it every
configured way with the serving retriever, and score the rankings with `ir_measures` (trec_eval).

What is measured is what users run: the same parse, chunk and embed stages, the same FAISS/Qdrant
backend and the same `Retriever` (dense, BM25, hybrid RRF, MMR, rerank). Documents are chunked, so
a document's rank is the rank of its best chunk among the `depth` chunks retrieved.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path

import ir_measures
import yaml
from ir_measures import RR, R, nDCG
from tqdm import tqdm

from evaluation import provenance
from evaluation.beir import Dataset
from evaluation.config import EvalError, EvalSettings
from pipelines.index_job import run_index_job
from serving.config import RerankerConfig
from serving.protocol import SearchRequest
from serving.retriever import Retriever

# Markdown, so the title is the one heading: unstructured's plain-text partitioner takes many short
# lines for titles, and the by_title chunker would cut a section into a chunk per line.
DOC_SUFFIX = ".md"


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    per_query_ndcg: dict[str, float]


def measures(dataset: Dataset, recall_at: tuple[int, ...]) -> list:
    """nDCG@10 on the graded labels; MRR@10 and recall on the top grade only (the answer itself)."""
    top = int(dataset.meta.get("recall_min_grade", max(g for docs in dataset.qrels.values() for g in docs.values())))
    return [nDCG @ 10, RR(rel=top) @ 10, *[R(rel=top) @ k for k in recall_at]]


def metric_name(measure) -> str:
    """`R(rel=2)@10` -> `recall@10`, `RR(rel=2)@10` -> `mrr@10`, `nDCG@10` -> `ndcg@10`."""
    family = {"R": "recall", "RR": "mrr", "nDCG": "ndcg"}[measure.NAME]
    return f"{family}@{measure.params['cutoff']}"


def index_dataset(dataset: Dataset, config: EvalSettings) -> tuple[str, dict[str, str]]:
    """Write one text file per document and run the index job over them (incremental: a re-run
    embeds only changed documents). Returns the index name and file key -> document id."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", dataset.name)[:64]
    docs_dir = config.eval.workdir / name / "docs"
    keys = _materialize(dataset, docs_dir)
    indexes = config.indexes.model_copy(update={"root": str(config.eval.workdir / name / "indexes")})
    run_index_job(indexes, config.index_job.model_copy(update={"name": name}), source=str(docs_dir))
    return name, keys


def _materialize(dataset: Dataset, docs_dir: Path) -> dict[str, str]:
    """Files named by position (document ids may hold '/' or '#'); stale files removed."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    keys = {}
    for n, (doc_id, doc) in enumerate(dataset.corpus.items()):
        key = f"{n:07d}{DOC_SUFFIX}"
        text = f"# {doc['title']}\n\n{doc['text']}" if doc.get("title") else doc["text"]
        path = docs_dir / key
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        keys[key] = doc_id
    for stale in set(p.name for p in docs_dir.iterdir()) - set(keys):
        (docs_dir / stale).unlink()
    return keys


def open_retriever(config: EvalSettings, name: str, reranker: Path | None) -> Retriever:
    serve = config.serve.retriever
    # fetch_k stays as served: a search for `depth` chunks fetches that many, and weighted fusion
    # normalises on the served fetch_k's window, so the top 10 scored is the top 10 a user gets
    updates = {"indexes": [name], "max_top_k": config.eval.depth}
    if reranker is not None:
        updates["reranker"] = RerankerConfig(model=reranker)
    store = config.indexes.model_copy(update={"root": str(config.eval.workdir / name / "indexes")})
    return Retriever(serve.model_copy(update=updates), store)


def evaluate_modes(
    dataset: Dataset, config: EvalSettings, modes: list[str], reranker: Path | None = None
) -> list[ModeResult]:
    if "rerank" in modes and reranker is None and config.serve.retriever.reranker is None:
        raise EvalError("mode 'rerank' needs a reranker: --reranker DIR or serve.retriever.reranker.model")
    name, keys = index_dataset(dataset, config)
    retriever = open_retriever(config, name, reranker or _configured_reranker(config))
    try:
        wanted = measures(dataset, config.eval.recall_at)
        return [_score(mode, _run(retriever, name, dataset, mode, keys, config.eval.depth), dataset, wanted)
                for mode in modes]  # fmt: skip
    finally:
        retriever.close()


def _configured_reranker(config: EvalSettings) -> Path | None:
    return config.serve.retriever.reranker.model if config.serve.retriever.reranker else None


def _run(retriever: Retriever, index: str, dataset: Dataset, mode: str, keys: dict[str, str], depth: int) -> dict:
    """query id -> document id -> score, documents ranked by their best chunk."""
    search_mode, rerank = ("dense", True) if mode == "rerank" else (mode, False)
    run = {}
    for query_id, text in tqdm(dataset.queries.items(), desc=f"search {mode}", unit="query", leave=False):
        request = SearchRequest(query=text, index=index, top_k=depth, mode=search_mode, rerank=rerank)
        result = asyncio.run(retriever.search(request))
        ranked = list(dict.fromkeys(keys[chunk.source] for chunk in result.chunks if chunk.source in keys))
        # Scores from ranks: trec_eval orders by score and breaks ties by id, not by our order.
        run[query_id] = {doc_id: float(len(ranked) - rank) for rank, doc_id in enumerate(ranked)}
    return run


def _score(mode: str, run: dict, dataset: Dataset, wanted: list) -> ModeResult:
    aggregate = ir_measures.calc_aggregate(wanted, dataset.qrels, run)
    per_query = {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], dataset.qrels, run)}
    return ModeResult(mode, {metric_name(m): float(aggregate[m]) for m in wanted}, per_query)


def report_json(
    dataset: Dataset, results: list[ModeResult], published: dict, path: Path, config: EvalSettings | None = None
) -> Path:
    """The report, with what it was measured on: a README table rendered from it can say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "dataset": dataset.name, "split": dataset.meta.get("split"), "queries": len(dataset.queries), "documents": len(dataset.corpus),
        "source": dataset.meta.get("package") or dataset.meta.get("source"), "fingerprint": dataset.fingerprint(),
        "embedder": config.indexes.embedder.model if config else None,
        "retriever": {
            "fusion": config.serve.retriever.fusion, "dense_weight": config.serve.retriever.dense_weight,
            "bm25": config.serve.retriever.bm25.model_dump(), "contextual": config.index_job.chunker.contextual,
            "lead_chars": config.index_job.chunker.lead_chars, "lead_pooling": config.index_job.chunker.lead_pooling,
            "mode": config.serve.retriever.mode,
        } if config else None,
        "depth": config.eval.depth if config else None,
        "measured_at": provenance.now(), "command": provenance.command(),
        "modes": {r.mode: {k: round(v, 4) for k, v in r.metrics.items()} for r in results}, "published": published,
    }  # fmt: skip
    path.write_text(json.dumps(body, indent=1))
    return path


def table(results: list[ModeResult]) -> str:
    names = list(results[0].metrics)
    rows = [f"{'mode':<8} " + " ".join(f"{n:>10}" for n in names)]
    rows += [f"{r.mode:<8} " + " ".join(f"{r.metrics[n]:>10.4f}" for n in names) for r in results]
    return "\n".join(rows)


def published_figures(path: Path, model: str, dataset: str) -> dict[str, dict]:
    """Published (or recorded baseline) figures for this dataset: the embedder's own and BM25's."""
    if not Path(path).exists():
        return {}
    table_ = yaml.safe_load(Path(path).read_text()) or {}
    return {who: table_[who][dataset] for who in (model, "bm25") if dataset in (table_.get(who) or {})}
