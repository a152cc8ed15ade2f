"""`rayrag readme`: every figure in the README is rendered from a committed report that a command wrote.

The README marks each generated block with `<!-- figures:NAME -->` ... `<!-- /figures:NAME -->`:

- `retrieval`: `reports/retrieval-python-faq.json`, from `rayrag eval retrieval --dataset python-faq --out ...`,
  and the plain-dense baseline `reports/retrieval-python-faq-baseline.json` (both by `make eval`);
- `gate`: `reports/eval-gate.json`, from `rayrag eval gate --record`;
- `bench`: `bench/results/latest.json`, from `make bench` (`bench/harness.py`);
- `guardrails`: `reports/guardrails.json`, from `rayrag eval guardrails`;
- `sweep`: `reports/retrieval-sweep-dev.json`, from `python bench/retrieval_sweep.py --split dev`;
- `conversations`: `reports/conversations-python-faq-{turns,model}.json`, from
  `rayrag eval conversations --rewriter turns|model`.

`rayrag readme --check` (a unit test runs it) fails when a block differs from what its report says, so
a typed-in number, or a report re-measured without re-rendering, is caught before it lands. Reading
JSON files keeps this module free of the pipelines and bench code that wrote them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RETRIEVAL = Path("reports/retrieval-python-faq.json")
BASELINE = Path("reports/retrieval-python-faq-baseline.json")  # dense on chunks embedded alone (no leads)
DEFAULT_OVER_DENSE = 0.03  # issue 18: the default mode beats plain dense search by this much nDCG@10 on test
GATE = Path("reports/eval-gate.json")
BENCH = Path("bench/results/latest.json")
GUARDRAILS = Path("reports/guardrails.json")
SWEEP = Path("reports/retrieval-sweep-dev.json")
CONVERSATIONS = {rewriter: Path(f"reports/conversations-python-faq-{rewriter}.json") for rewriter in ("turns", "model")}
REPORTS = (RETRIEVAL, BASELINE, GATE, BENCH, GUARDRAILS, SWEEP, *CONVERSATIONS.values())  # every report a block reads
BLOCK = re.compile(r"(<!-- figures:(\w+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.DOTALL)
MODE_NAMES = {"dense": "dense", "bm25": "bm25", "hybrid": "hybrid (RRF)", "mmr": "mmr", "rerank": "rerank"}
# The serving figures the README quotes (all of them are in bench/results/summary.md).
HEADLINE = ("search_rps_32c_over_bare", "search_rps_32c", "search_bare_sequential_rps", "search_rps_32c_over_inprocess",
            "search_inprocess_sequential_rps", "search_p99_over_p50",
            "search_http_p50_ms", "search_retriever_took_p50_ms", "http_floor_p50_ms", "search_overhead_over_floor_ms",
            "cache_hit_p50_ms",
            "cache_hit_gateway_p50_ms", "cache_hit_over_floor_ms", "cache_hit_vs_miss", "cold_start_s",
            "cold_start_primary_s", "fallback_vs_llama_cpp", "index_vs_bare_encode", "embed_openvino_vs_torch",
            "embed_max_cosine_distance", "first_answer_s", "setup_s", "serve_s", "ivf_pq_recall_at_10", "ivf_pq_vs_hnsw_query",
            "ivf_pq_vs_hnsw_memory", "hnsw_recall_at_10", "scale_out_s", "scale_in_s", "peak_retriever_replicas",
            "failed_requests", "spill_share", "ingest_to_searchable_s", "cli_index_s", "ingest_vs_cli")  # fmt: skip


class FiguresError(ValueError):
    """A README block without its report, or a report without its block."""


def _load(root: Path, path: Path) -> dict:
    full = root / path
    if not full.exists():
        raise FiguresError(f"{path} is missing: the README's figures are rendered from it")
    return json.loads(full.read_text())


def retrieval_block(root: Path) -> str:
    report = _load(root, RETRIEVAL)
    split = f" `{report['split']}` half" if report.get("split") else ""
    lines = [f"`{report['dataset']}`{split}: {report['queries']} queries, {report['documents']:,} documents, "
             f"{report['source']}, embedder {report['embedder']}, depth {report['depth']} "
             f"(`{report['command']}`, {report['measured_at']}):", "",
             "| mode | nDCG@10 | MRR@10 | recall@10 | recall@100 |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    retriever = report.get("retriever") or {}
    for mode, m in report["modes"].items():
        name = MODE_NAMES.get(mode, mode) + (f" ({report['embedder']})" if mode == "dense" else "")
        if mode == "hybrid" and retriever.get("fusion") == "weighted":
            name = f"hybrid (weighted, dense {retriever['dense_weight']:g})"
        lines.append(f"| {name} | {m['ndcg@10']:.3f} | {m['mrr@10']:.3f} | {m['recall@10']:.3f} | {m['recall@100']:.3f} |")
    baseline = _load(root, BASELINE)
    plain = baseline["modes"]["dense"]
    lines.append(f"| dense, each chunk embedded alone (`lead_chars: null`; the baseline) | {plain['ndcg@10']:.3f} | "
                 f"{plain['mrr@10']:.3f} | {plain['recall@10']:.3f} | {plain['recall@100']:.3f} |")  # fmt: skip
    for who, figure in report.get("published", {}).items():
        cells = [f"{figure[k]:.2f}" if k in figure else "" for k in ("ndcg@10", "mrr@10", "recall@10", "recall@100")]
        lines.append(f"| {who}: {figure.get('source') or 'published'} | " + " | ".join(cells) + " |")
    default = retriever.get("mode")
    if default in report["modes"]:
        if baseline.get("fingerprint") != report.get("fingerprint"):
            raise FiguresError(f"{BASELINE} and {RETRIEVAL} were measured on different datasets")
        gain = report["modes"][default]["ndcg@10"] - plain["ndcg@10"]
        verdict = "met" if gain >= DEFAULT_OVER_DENSE else "MISSED"
        pooled = {"context": " pooled in context", "separate": " embedded alone"}.get(retriever.get("lead_pooling"), "")
        chunks = f"chunks with their leads{pooled}" if retriever.get("lead_chars") else "chunks embedded alone"
        lines += ["", f"The default mode ({default}, {chunks}) over the baseline: {gain:+.3f} nDCG@10 "
                      f"({verdict}, target >= +{DEFAULT_OVER_DENSE:g}; baseline by `{baseline['command']}`, "
                      f"{baseline['measured_at']})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_block(root: Path) -> str:
    report = _load(root, SWEEP)
    lines = [f"`{report['dataset']}` `{report['split']}` half: {report['queries']} queries, "
             f"{report['documents']:,} documents (`{report['command']}`, {report['measured_at']}):", "",
             "| configuration | chunks | nDCG@10 | MRR@10 | recall@10 | recall@100 |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in report["configs"].items():
        label = name.rsplit(", ", 1)[0]
        lines.append(f"| {label} | {m['chunks']} | {m['ndcg@10']:.3f} | {m['mrr@10']:.3f} | "
                     f"{m['recall@10']:.3f} | {m['recall@100']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def gate_block(root: Path) -> str:
    r = _load(root, GATE)
    split = f"of the `{r['split']}` half " if r.get("split") else ""
    return (f"The gate subset {split}({r['queries']} queries, {r['documents']} documents, seed {r['seed']}, {r['source']}) "
            f"scores {r['mode']} nDCG@10 {r['ndcg10']:.4f} with {r['embedder']}, recorded {r['recorded_at']} by "
            f"`{r['command']}` in `{GATE}` with the subset's fingerprint.\n")  # fmt: skip


def bench_block(root: Path) -> str:
    latest = _load(root, BENCH)
    lines = ["| figure | value | target | run |", "|---|---:|---|---|"]
    for name in HEADLINE:
        for run in (r for r in bench_runs(latest) if name in r["values"]):
            value, m = run["values"][name], run["machine"]
            where = f"{run['benchmark']}, {run['at'][:10]}, {m['cpus']} CPUs{features(m)}, load {m.get('load_avg_1m_at_start')}"
            lines.append(f"| `{name}` | {value:.4g} | {verdict(name, value)} | {where} |")
    return "\n".join(lines) + "\n"


# A host's class for the figures: the widest of these instruction sets it has. The embedding figures turn on
# it (OpenVINO runs all-MiniLM-L6-v2 in bf16 where avx512_bf16 is and in f32 on AVX2 alone, at about half
# the rate, on two 2-core VMs that both call themselves "AMD EPYC"), so `latest.json` keeps each benchmark's
# latest run per class, and a run on one kind of host never replaces the quoted run of another.
CPU_CLASSES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
UNRECORDED = "unrecorded"  # a run from before the harness recorded cpu_features


def cpu_class(machine: dict) -> str:
    """`avx512_bf16`, `avx2`, ...: the first of CPU_CLASSES in the run's cpu_features; `x86-64` for none
    of them (or another architecture), `unrecorded` where the run did not record them."""
    if "cpu_features" not in machine:
        return UNRECORDED
    return next((c for c in CPU_CLASSES if c in machine["cpu_features"]), "x86-64")


def class_order(cpu: str) -> int:
    """Widest first, then x86-64, then unrecorded: the order the summary and the README list a figure's runs in."""
    return CPU_CLASSES.index(cpu) if cpu in CPU_CLASSES else len(CPU_CLASSES) + (cpu == UNRECORDED)


def bench_runs(latest: dict) -> list[dict]:
    """Every run in `latest.json` ({benchmark: {cpu class: run}}), by benchmark, then class (class_order)."""
    return [runs[cpu] for _, runs in sorted(latest.items()) for cpu in sorted(runs, key=class_order)]


def features(machine: dict) -> str:
    """`, avx2 avx512f avx512_bf16`: the instruction sets a run recorded (bench.harness.cpu_features);
    `, CPU flags not recorded` for a run from before they were recorded, empty on a CPU with none of them."""
    if "cpu_features" not in machine:
        return ", CPU flags not recorded"
    return f", {' '.join(machine['cpu_features'])}" if machine["cpu_features"] else ""


def guardrails_block(root: Path) -> str:
    report = _load(root, GUARDRAILS)
    lines = ["| set | attacks | blocked | benign | wrongly blocked |", "|---|---:|---:|---:|---:|"]
    for name, f in report["sets"].items():
        lines.append(f"| {name} | {f['attacks']} | {f['block_rate']:.1%} | {f['benign']} | {f['false_positive_rate']:.1%} |")
    return "\n".join(lines) + "\n"


def conversations_block(root: Path) -> str:
    reports = {rewriter: _load(root, path) for rewriter, path in CONVERSATIONS.items()}
    turns, model = reports["turns"], reports["model"]
    splits = list(turns["splits"])
    head = " | ".join(f"{name} ({turns['splits'][name]['dialogues']})" for name in splits)
    lines = [f"`{turns['dataset']}`, {turns['dialogues']} dialogues (`{turns['dialogues_file']}`, sha256 "
             f"{turns['sha256'][:12]}), mode {turns['mode']}, recall@{turns['at']} of the second turn's gold section "
             f"(`{turns['command']}`, {turns['measured_at']}; `{model['command']}`, {model['measured_at']}):", "",
             f"| the second turn searched as | {head} |", "|---|" + "---:|" * len(splits)]  # fmt: skip

    def row(label: str, report: dict, way: str) -> str:
        return f"| {label} | " + " | ".join(f"{report['splits'][n]['recall'][way]:.3f}" for n in splits) + " |"

    def ratio(label: str, report: dict) -> str:
        cells = [f"{report['splits'][n]['ratio']:.2f} {'met' if report['splits'][n]['met'] else 'MISSED'}" for n in splits]
        return f"| {label} (target >= {turns['target']:g}) | " + " | ".join(cells) + " |"

    lines += [row("the last message alone", turns, "alone"), row("the user turns, last first", turns, "conversation"),
              row("the model's rewrite, then the user turns", model, "conversation"),
              row("its standalone wording (the ceiling)", turns, "standalone"),
              ratio("ratio, user turns / standalone", turns), ratio("ratio, rewrite + turns / standalone", model)]  # fmt: skip
    return "\n".join(lines) + "\n"


# The targets the issues set for the bench's figures; bench/harness.py prints its summary against these.
TARGETS: dict[str, tuple[str, float]] = {
    # issue 15 (one answer flow): batching beats the bare loop; the gateway adds little to a search or a cache hit
    "search_rps_32c_over_bare": (">=", 1.5), "search_p99_over_p50": ("<=", 3.0),
    "search_overhead_over_floor_ms": ("<=", 5.0), "cache_hit_gateway_p50_ms": ("<=", 5.0),
    "cache_hit_over_floor_ms": ("<=", 5.0),
    # issue 19 (embedding at the speed of the CPU), on the docs' howto/ pages
    "index_vs_bare_encode": (">=", 1.0), "embed_openvino_vs_torch": (">=", 2.0), "embed_max_cosine_distance": ("<=", 1e-4),
    "first_answer_s": ("<=", 440),  # a third of the ~22 minutes from clone to serving measured before
    # issue 18 (retrieval at any size): IVF-PQ, re-scored, at 1M vectors, against HNSW in the same run
    "ivf_pq_recall_at_10": (">=", 0.95), "ivf_pq_vs_hnsw_query": ("<=", 5.0), "ivf_pq_vs_hnsw_memory": ("<", 1.0),
    # issue 23 (autoscaling you can watch): no request fails while replicas start, drain or spill
    "failed_requests": ("<=", 0),
}  # fmt: skip
def verdict(name: str, value: float) -> str:
    """`met (>= 1.5)` or `MISSED (>= 1.5)` against the figure's target; empty when it has none."""
    if name not in TARGETS:
        return ""
    op, bound = TARGETS[name]
    met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
    return f"{'met' if met else 'MISSED'} ({op} {bound:g})"


RENDERERS: dict[str, Callable[[Path], str]] = {
    "retrieval": retrieval_block, "gate": gate_block, "bench": bench_block, "guardrails": guardrails_block,
    "sweep": sweep_block, "conversations": conversations_block,
}  # fmt: skip


def render(text: str, root: Path = REPO) -> str:
    """`text` with every figures block replaced by what its report says; an unknown block is an error."""
    names = [m.group(2) for m in BLOCK.finditer(text)]
    unknown = [n for n in names if n not in RENDERERS]
    if unknown:
        raise FiguresError(f"README block(s) {', '.join(unknown)} have no report; known: {', '.join(RENDERERS)}")
    return BLOCK.sub(lambda m: m.group(1) + RENDERERS[m.group(2)](root) + m.group(4), text)


def stale_blocks(text: str, root: Path = REPO) -> list[str]:
    rendered = {m.group(2): m.group(3) for m in BLOCK.finditer(render(text, root))}
    return [m.group(2) for m in BLOCK.finditer(text) if rendered[m.group(2)] != m.group(3)]
