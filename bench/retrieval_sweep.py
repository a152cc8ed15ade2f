"""retrieval_sweep: every retrieval configuration tried, scored on one split of python-faq.

Tuning happens on `dev` (whole FAQ pages never reported); the chosen default is then checked once on
`test` by `make eval`. Each configuration is a set of `--set` overrides of the root config; the
dataset is indexed once per chunker setting (plain, contextual, and with each chunk's lead: the
default; each in its own work directory) and searched with the real `Retriever`, exactly as
`rayrag eval retrieval` does.

    python bench/retrieval_sweep.py [--split dev] [--out reports/retrieval-sweep-dev.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import provenance
from evaluation.datasets import resolve_dataset
from evaluation.retrieval import _run, _score, index_dataset, measures, open_retriever
from rayrag.config import load_config
from rayrag.runtime import connect_ray

OLD_BM25 = ["serve.retriever.bm25={stemmer: null, stopwords: en}"]  # the analyser before this sweep
# name -> (mode, overrides); "ctx" rows index the chunks after their title and section
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "dense": ("dense", []),
    "bm25 (no stemmer, en stop words)": ("bm25", OLD_BM25),
    "bm25 (english stemmer, en_plus)": ("bm25", []),
    "hybrid rrf, old bm25": ("hybrid", [*OLD_BM25, "serve.retriever.fusion=rrf"]),
    "hybrid rrf": ("hybrid", ["serve.retriever.fusion=rrf"]),
    **{f"hybrid weighted {w}": ("hybrid", [f"serve.retriever.dense_weight={w}"]) for w in (0.5, 0.6, 0.7, 0.8, 0.9)},
    "mmr": ("mmr", []),
}
# chunk settings: each indexed once, in its own work directory; "leads" (each embedded alone) is the default
CHUNKS: dict[str, list[str]] = {
    "plain": ["index_job.chunker.lead_chars=null", "eval.workdir=.rayrag/eval/indexes-plain"],
    "contextual": ["index_job.chunker.contextual=true", "index_job.chunker.lead_chars=null",
                   "eval.workdir=.rayrag/eval/indexes-contextual"],
    "leads": ["index_job.chunker.lead_pooling=separate"],
    "leads in context": ["index_job.chunker.lead_pooling=context", "eval.workdir=.rayrag/eval/indexes-leads-context"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev")
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(f"reports/retrieval-sweep-{args.split}.json")
    rows = {}
    for chunks, extra in CHUNKS.items():
        settings = load_config(args.config, extra)
        connect_ray(settings.ray)
        data = resolve_dataset("python-faq", settings.eval.datasets_dir, args.split)
        name, keys = index_dataset(data, settings.evaluation())
        wanted = measures(data, settings.eval.recall_at)
        for label, (mode, overrides) in CONFIGS.items():
            tuned = load_config(args.config, [*extra, *overrides]).evaluation()
            retriever = open_retriever(tuned, name, None)
            try:
                result = _score(mode, _run(retriever, name, data, mode, keys, tuned.eval.depth), data, wanted)
            finally:
                retriever.close()
            row = {"chunks": chunks, "mode": mode, "overrides": [*(o for o in extra if "workdir" not in o), *overrides]}
            rows[f"{label}, {chunks}"] = row | {k: round(v, 4) for k, v in result.metrics.items()}
            print(f"{label:<36} {chunks:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    body = {"dataset": "python-faq", "split": args.split, "queries": len(data.queries), "documents": len(data.corpus),
            "measured_at": provenance.now(), "command": " ".join(["python bench/retrieval_sweep.py", *sys.argv[1:]]),
            "configs": rows}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=1) + "\n")
    print(f"report: {out}")


if __name__ == "__main__":
    main()
