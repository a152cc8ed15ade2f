"""`rayrag eval ...`: build labelled datasets, measure retrieval and answers, gate CI on quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rayrag.config import RootConfig
from rayrag.options import DEFAULT_CONFIG, ConfigOption, SetOption, load_settings

eval_app = typer.Typer(help="Measure retrieval and answer quality on labelled data.", no_args_is_help=True)


def _settings(config: Path, overrides: list[str] | None = None) -> RootConfig:
    return load_settings(config, overrides)


@eval_app.command("build-faq-dataset")
def build_faq(
    out: Annotated[Path, typer.Option(help="Directory to write (BEIR layout).")] = Path(
        ".rayrag/eval/datasets/python-faq"
    ),
    sources: Annotated[
        Path | None, typer.Option(help="An unpacked `_sources` directory (default: download python3.11-doc).")
    ] = None,
) -> None:
    """Build the Python-FAQ retrieval set: FAQ questions as queries, their answer sections as gold."""
    from evaluation.faq_dataset import build_faq_dataset

    dataset = build_faq_dataset(out, sources)
    judged = sum(len(docs) for docs in dataset.qrels.values())
    typer.echo(f"wrote {out}: {len(dataset.queries)} queries, {len(dataset.corpus)} documents, {judged} judgements")


@eval_app.command("retrieval")
def retrieval(
    dataset: Annotated[str, typer.Option(help="A BEIR-layout directory, or python-faq (built on first use).")],
    modes: Annotated[str, typer.Option(help="Comma-separated: dense,bm25,hybrid,mmr,rerank.")] = "dense,bm25,hybrid",
    reranker: Annotated[Path | None, typer.Option(help="CrossEncoder directory for the rerank mode.")] = None,
    queries: Annotated[int | None, typer.Option(help="Evaluate on this many queries (a fixed subset).")] = None,
    distractors: Annotated[int, typer.Option(help="With --queries: unjudged documents kept.")] = 1000,
    split: Annotated[
        str, typer.Option(help="Which judged queries: dev (tune on these) or test (report these); qrels/<split>.tsv.")
    ] = "test",
    out: Annotated[Path | None, typer.Option(help="JSON report (default: eval.reports_dir).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
) -> None:
    """Index the dataset with the index job, then report recall@k, MRR@10 and nDCG@10 per mode."""
    from evaluation.retrieval import evaluate_modes, published_figures, report_json, table

    chosen = _modes(modes)  # checked before any dataset is read or built
    settings, data = _dataset(config, overrides, dataset, queries, distractors, split=split)
    results = evaluate_modes(data, settings.evaluation(), chosen, reranker)
    typer.echo(f"{data.name} ({split}): {len(data.queries)} queries, {len(data.corpus)} documents")
    typer.echo(table(results))
    published = published_figures(settings.eval.published, Path(settings.indexes.embedder.model).name, data.name)
    for who, figure in published.items():
        typer.echo(f"published {who}: " + ", ".join(f"{k} {v}" for k, v in figure.items() if k != "source")
                   + f"  ({figure.get('source', '')})")  # fmt: skip
    if not published:
        typer.echo(f"published: no figure recorded for {data.name!r} in {settings.eval.published}")
    path = report_json(
        data,
        results,
        published,
        out or settings.eval.reports_dir / f"retrieval-{data.name}-{split}.json",
        settings.evaluation(),
    )
    typer.echo(f"report: {path}")


@eval_app.command("conversations")
def conversations(
    dataset: Annotated[str, typer.Option(help="A BEIR-layout directory, or python-faq (built on first use).")] = "python-faq",
    dialogues: Annotated[Path, typer.Option(help="JSON lines: {id, turns: [{text, gold}, ...], standalone}.")] = Path(
        "data/eval/python-faq-dialogues.jsonl"
    ),
    rewriter: Annotated[
        str, typer.Option(help="turns: the deterministic query; model: the config chain's first generator, in-process.")
    ] = "turns",
    out: Annotated[
        Path | None, typer.Option(help="JSON report (default: reports/conversations-<dataset>-<rewriter>.json).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
) -> None:
    """Second-turn recall@10 of a multi-turn set: the follow-up alone, with the conversation, standalone."""
    from evaluation.config import EvalError
    from evaluation.conversations import SPLITS, evaluate_conversations, pages_by_split, summary, write_report

    if rewriter not in ("turns", "model"):
        raise EvalError(f"--rewriter {rewriter!r}: choose turns or model")
    settings, data = _dataset(config, overrides, dataset, None, 0)
    generate = _chain_generator(settings) if rewriter == "model" else None
    halves = {split: data if split == "test" else _half(dataset, settings, split) for split in SPLITS}  # data: test
    pages = pages_by_split({split: half for split, half in halves.items() if half is not None})
    report = evaluate_conversations(data, dialogues, settings.evaluation(), generate, pages)
    typer.echo(summary(report))
    out = out or Path("reports") / f"conversations-{data.name}-{rewriter}.json"
    typer.echo(f"report: {write_report(report, out)}")


def _half(dataset: str, settings: RootConfig, split: str):
    """One split of a dataset, or None when it has no such split (a dataset without `qrels/dev.tsv`)."""
    from evaluation.beir import DatasetError
    from evaluation.datasets import resolve_dataset

    try:
        return resolve_dataset(dataset, settings.eval.datasets_dir, split)
    except DatasetError:
        return None


def _chain_generator(settings: RootConfig):
    """The config chain's first model, in-process, as the follow-up stage's `generate`."""
    from evaluation.answering import first_generator
    from evaluation.config import EvalError
    from serving.generator.extractive import ExtractiveGenerator

    generator = first_generator(settings.serve)
    if isinstance(generator, ExtractiveGenerator):
        raise EvalError("--rewriter model: the config's chain starts with the extractive step, which cannot rewrite")
    return generator.generate


@eval_app.command("gate")
def gate(
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
    record: Annotated[
        bool, typer.Option("--record", help="Write the measured figure and its provenance to eval.gate.record.")
    ] = False,
) -> None:
    """CI gate: nDCG@10 of the configured retriever mode on the gate subset vs the recorded figure."""
    from evaluation.gate import check, check_missing, make_record, read_record, write_record
    from evaluation.retrieval import evaluate_modes

    settings = _settings(config, overrides)
    spec = settings.eval.gate
    recorded = None if record else read_record(spec.record)  # a malformed record is refused before any work
    if not record and recorded is None:  # and so is a missing one: minutes of indexing would end the same way
        typer.echo(check_missing(spec.record).message)
        raise typer.Exit(1)
    settings, data = _dataset(
        config, overrides, spec.dataset, spec.queries, spec.distractors, spec.seed, split=spec.split
    )
    mode = settings.serve.retriever.mode
    [result] = evaluate_modes(data, settings.evaluation(), [mode])
    measured = make_record(data, spec, mode, settings.indexes.embedder.model, result.metrics)
    typer.echo(f"{data.name} {spec.split} ({len(data.queries)} queries, {len(data.corpus)} documents, {measured.source}), "
               f"mode {mode}: " + json.dumps(measured.metrics))  # fmt: skip
    if record:
        typer.echo(f"recorded nDCG@10 {measured.ndcg10:.4f} in {write_record(measured, spec.record)}")
        return
    outcome = check(measured, recorded, spec.margin, spec.record)
    typer.echo(outcome.message)
    if not outcome.passed:
        raise typer.Exit(1)


def _dataset(
    config: Path, overrides, name: str, queries: int | None, distractors: int, seed: int = 0, split: str = "test"
):
    from evaluation.datasets import resolve_dataset
    from rayrag.runtime import connect_ray

    settings = _settings(config, overrides)
    data = resolve_dataset(name, settings.eval.datasets_dir, split)
    if queries is not None:
        data = data.subset(queries, distractors, seed)
    connect_ray(settings.ray)
    return settings, data


def _modes(modes: str) -> list[str]:
    from typing import get_args

    from evaluation.config import EvalError, RetrievalMode

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in get_args(RetrievalMode)]
    if unknown or not chosen:
        raise EvalError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {get_args(RetrievalMode)}")
    return chosen


@eval_app.command("guardrails")
def guardrails(
    out: Annotated[Path, typer.Option(help="JSON report (committed; the README quotes it).")] = Path(
        "reports/guardrails.json"
    ),
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
) -> None:
    """Block and false-positive rates of the input guardrails on the regression and held-out sets."""
    from evaluation.guardrail_rates import measure

    report = measure(_settings(config, overrides).serve.gateway.guardrails)
    for name, figures in report["sets"].items():
        typer.echo(f"{name}: block rate {figures['block_rate']:.3f} on {figures['attacks']} attacks, "
                   f"false-positive rate {figures['false_positive_rate']:.3f} on {figures['benign']} benign")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    typer.echo(f"report: {out}")


@eval_app.command("answers")
def answers(
    questions: Annotated[Path, typer.Option(help="JSON lines: {question, reference (optional), id (optional)}.")],
    config: ConfigOption = DEFAULT_CONFIG,
    against: Annotated[Path | None, typer.Option(help="A second config to compare with (pairwise).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report directory (default: eval.reports_dir/answers).")] = None,
    overrides: SetOption = None,
) -> None:
    """Answer the questions with config A (and B), judge every answer; write JSON, Markdown and a PNG."""
    from evaluation.answer_report import markdown, write_report
    from evaluation.eval_job import read_questions, run_answer_eval
    from rayrag.runtime import connect_ray

    settings = _settings(config, overrides)
    rows = read_questions(questions)
    configs = {"a": settings.serving()}
    names = {"a": str(config)}
    if against is not None:
        configs["b"], names["b"] = _settings(against, overrides).serving(), str(against)
    connect_ray(settings.ray)
    results = run_answer_eval(rows, configs, settings.eval.answers, settings.indexes.embedder)
    paths = write_report(results, names, out or settings.eval.reports_dir / "answers")
    typer.echo(markdown(json.loads(paths["json"].read_text())["summary"], names))
    typer.echo("report: " + ", ".join(str(p) for p in paths.values()))
