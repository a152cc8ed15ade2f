"""index_vs_bare_encode: the index job's end-to-end chunks/s over a bare `SentenceTransformer.encode`.

Both sides embed the same chunks with the same model on the same machine in one run. The job side
includes everything the job does (listing, reading, parsing with unstructured, chunking, embedding
in the Ray actor pool, writing FAISS + the chunk store); the bare side only encodes the texts the
job's model calls embedded (each chunk; and each lead too where `chunker.lead_pooling` is `separate`) in
one process, with PyTorch, as a user would write it. A re-run over the unchanged corpus is timed
too (`rerun_unchanged_s`).

embed_openvino_vs_torch: the same chunks through rayrag's embedder on OpenVINO over the bare torch
encode, with the largest cosine distance between the two vectors of a chunk (the backends must agree).

    python bench/index_throughput.py [--source DIR] [--config configs/default.yaml]

On a corpus of a few dozen chunks the job's fixed start-up (actors importing unstructured, spaCy
and torch, loading the model) dominates; the default source is sized so that it does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.harness import Timer, bare_sentence_transformer, record
from indexes.embedder import load_embedder
from indexes.reader import IndexVersion
from pipelines.corpus import SAMPLE_DIR
from pipelines.index_job import run_index_job
from pipelines.stages import embedded_texts
from rayrag.config import load_config
from rayrag.runtime import connect_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    howto = Path(".rayrag/corpus/python-3.11-docs/howto")
    default = howto if howto.exists() else SAMPLE_DIR
    parser.add_argument(
        "--source", default=str(default), help="corpus (default: the docs' howto/ after `make run`, else data/sample)"
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(args.config, updates={"indexes.root": tmp, "index_job.name": "bench"})
        connect_ray(config.ray)
        report = run_index_job(config.indexes, config.index_job, source=args.source)
        with Timer() as rerun:
            run_index_job(config.indexes, config.index_job, source=args.source)
        version = IndexVersion.open_current(config.indexes.root, "bench")
        chunks = list(version.store)
        places = [(c.text, c.title, c.section) for c in chunks]
        texts, leads = embedded_texts(places, config.index_job.chunker)
        if config.index_job.chunker.lead_pooling == "separate":
            texts += list(leads.values())  # the bare side does the job's model calls: each chunk, and its lead
        # pooled in context, a lead costs no model call (bar one the model cut off: 1 in 790 here)
        version.close()
    bare, reference = bare_torch_encode(config, texts)
    accelerated = config.indexes.embedder.model_copy(update={"backend": "openvino"})
    embedder = load_embedder(accelerated, bulk=True)  # as the index job's embed actors run it
    embedder.encode(texts[:64], config.index_job.embed.batch_size)  # warm-up, as on the bare side
    with Timer() as fast:
        vectors = embedder.encode(texts, config.index_job.embed.batch_size)
    job_rate = report.chunks.added / report.seconds
    bare_rate = len(chunks) / bare.seconds  # chunks whose vectors the bare side made, leads included
    record(
        "index_throughput",
        {
            "index_vs_bare_encode": job_rate / bare_rate,
            "embed_openvino_vs_torch": bare.seconds / fast.seconds,
            "embed_max_cosine_distance": 1.0 - float((vectors * reference).sum(axis=1).min()),
            "index_chunks_per_s": job_rate,
            "bare_encode_chunks_per_s": bare_rate,
            "openvino_encode_chunks_per_s": len(chunks) / fast.seconds,
            "index_job_s": report.seconds,
            "bare_encode_s": bare.seconds,
            "rerun_unchanged_s": rerun.seconds,
            "chunks": len(chunks),
            "embedded_texts": len(texts),
            "documents": report.documents.parsed,
        },
        {
            "source": args.source,
            "backend": config.index_job.backend.label,
            "embedder_backend": config.indexes.embedder.backend,
            "openvino_precision": embedder.precision,  # what ran: bf16 is asked, f32 runs where the CPU has no bf16
            "benchmark_embedder": embedder.backend,
        },
        started_load=load_at_start,
    )


def bare_torch_encode(config, texts: list[str]) -> tuple[Timer, np.ndarray]:
    """What a user would write: the model in sentence-transformers on PyTorch, one encode call."""
    model = bare_sentence_transformer(config.indexes.embedder)
    options = {
        "batch_size": config.index_job.embed.batch_size,
        "normalize_embeddings": True,
        "show_progress_bar": False,
    }
    model.encode(texts[:64], **options)  # warm-up, as the job's actors warm up on load
    with Timer() as bare:
        vectors = model.encode(texts, **options)
    return bare, np.asarray(vectors, dtype=np.float32)


if __name__ == "__main__":
    main()
