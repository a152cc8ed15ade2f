"""The `rayrag` command line. Errors users can fix are mapped here, once, to a message and exit 2."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from core.placement import PlacementError
from evaluation.config import EvalError
from indexes.embedder import ModelNotFoundError
from indexes.faiss_index import TrainingDataError
from indexes.layout import IndexLockedError, IndexNotFoundError
from indexes.manifest import Manifest
from indexes.storage import locate, write_text
from pipelines.report import JobReport
from pipelines.sources import SourceError
from rayrag.config import ConfigError, RootConfig
from rayrag.deploy_cli import deploy_app
from rayrag.eval_cli import eval_app
from rayrag.extras import missing_extra_message
from rayrag.feedback_cli import feedback_app
from rayrag.figures import FiguresError
from rayrag.keys_cli import keys_app
from rayrag.options import DEFAULT_CONFIG, ConfigOption, DetachOption, SetOption, SourceOption, load_settings
from rayrag.serve_cli import ServeStartError
from serving.generator.models import ModelUnavailableError

USER_ERRORS = (
    ConfigError,
    SourceError,
    IndexLockedError,
    IndexNotFoundError,
    ModelNotFoundError,
    TrainingDataError,
    ServeStartError,
    ModelUnavailableError,
    EvalError,
    PlacementError,
    FiguresError,
)

app = typer.Typer(help="rayrag: distributed retrieval-augmented generation on Ray.", no_args_is_help=True)
index_app = typer.Typer(help="Build, update and inspect indexes.")
app.add_typer(index_app, name="index")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")
app.add_typer(eval_app, name="eval")
app.add_typer(deploy_app, name="deploy")


@index_app.callback(invoke_without_command=True)
def index(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    source: SourceOption = None,
    index_name: Annotated[
        str | None, typer.Option("--index", help="Index name (default: config index_job.name).")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything instead of updating.")] = False,
    report_out: Annotated[
        str | None, typer.Option(help="Also write the job report as JSON here (a path or a URI).")
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Build or update an index: only new or changed documents are embedded."""
    if ctx.invoked_subcommand:
        return
    from pipelines.index_job import run_index_job
    from rayrag.runtime import connect_ray

    updates = {"index_job.name": index_name} if index_name else {}
    settings = load_settings(config, overrides, updates)
    connect_ray(settings.ray)
    report = run_index_job(settings.indexes, settings.index_job, source=source, rebuild=rebuild)
    if report_out:  # for whoever started the job elsewhere (the gateway's index jobs read it)
        write_text(report_out, report.model_dump_json(indent=1))
    typer.echo(report.summary())


@index_app.command("drop")
def drop(
    name: Annotated[str, typer.Argument(help="Index name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: every version is deleted, for good.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
) -> None:
    """Delete an index: CURRENT first (readers then see no index), then every version and its vectors."""
    if not yes:
        raise typer.BadParameter("deleting an index cannot be undone: add --yes", param_hint="--yes")
    from pipelines.index_job import drop_index

    settings = load_settings(config, overrides, {"index_job.name": name})
    dropped = drop_index(settings.indexes, settings.index_job)
    typer.echo(f"index {name!r}: removed {len(dropped)} version(s)")


@index_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="Index name.")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an index's versions, counts, embedder spec and last job report."""
    settings = load_settings(config)
    location = locate(settings.indexes.root, name)
    version = location.current_version()
    if version is None:
        raise IndexNotFoundError(f"index {name!r} has no version at {location.describe()}: run `rayrag index`")
    current = location.local_path(version)
    manifest, report, versions = Manifest.load(current), JobReport.load(current), location.versions()
    if as_json:
        payload = {
            "index": name, "current": manifest.version, "versions": versions,
            "documents": len(manifest.documents), "chunks": manifest.chunk_count,
            "embedder": manifest.embedder.model_dump(), "chunker": manifest.chunker, "backend": manifest.backend,
            "report": report.model_dump(mode="json") if report else None,
        }  # fmt: skip
        typer.echo(json.dumps(payload, indent=1))
        return
    typer.echo(f"index {name!r} at {location.describe()}")
    for listed in versions:
        typer.echo(f"  {'*' if listed == manifest.version else ' '} {listed}")
    typer.echo(f"documents: {len(manifest.documents)}  chunks: {manifest.chunk_count}")
    spec = manifest.embedder
    typer.echo(f"embedder: {spec.model} dim={spec.dim} normalize={spec.normalize} max_seq_length={spec.max_seq_length}")
    typer.echo("last job report:\n" + (report.summary() if report else "  (none)"))


@app.command("serve")
def serve_command(
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
    detach: DetachOption = False,
) -> None:
    """Serve the indexes over HTTP (OpenAI-compatible gateway, retriever, generators) on Ray Serve."""
    from rayrag.runtime import connect_ray
    from rayrag.serve_cli import preflight

    settings = load_settings(config, overrides)
    preflight(settings)
    connect_ray(settings.ray)
    _serve(settings, detach)


@app.command("run")
def run_command(
    config: ConfigOption = DEFAULT_CONFIG,
    source: SourceOption = None,
    overrides: SetOption = None,
    detach: DetachOption = False,
) -> None:
    """Index (only what changed), then serve: `rayrag index` and `rayrag serve` on one Ray instance (`make run`)."""
    from pipelines.index_job import run_index_job
    from rayrag.runtime import connect_ray
    from rayrag.serve_cli import preflight

    settings = load_settings(config, overrides)
    preflight(settings, building=settings.index_job.name)  # a missing engine or other index: before the job
    connect_ray(settings.ray)  # one instance for both: the second start and stop was 5-10 s of a first run
    typer.echo(run_index_job(settings.indexes, settings.index_job, source=source).summary())
    _serve(settings, detach)


def _serve(settings: RootConfig, detach: bool) -> None:
    """Start the app on the connected Ray and, unless detached, hold it until Ctrl-C or SIGTERM."""
    from rayrag.serve_cli import examples, start_app

    typer.echo("starting the serving app (models load in their replicas; this can take a minute)")
    url = start_app(settings)
    typer.echo(examples(url, settings))
    if detach:
        return
    # SIGTERM (systemd, Kubernetes, `docker stop`) drains like Ctrl-C instead of dying in Ray's native
    # handler with a stack dump; installed after Ray started (it installs its own), before saying so.
    signal.signal(signal.SIGTERM, _interrupt)
    try:  # the message inside: a signal right after it must land where it is handled
        typer.echo("Ctrl-C (or SIGTERM) stops it.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        typer.echo("stopping: draining the app")
        serve.shutdown()
        typer.echo("stopped")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command("trace")
def trace_command(
    request_id: Annotated[str, typer.Argument(help="The request id (x-rayrag-request-id header, `id` of a response).")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="The spans as JSON lines instead of a tree.")] = False,
) -> None:
    """Print one request's story: its spans (gateway, retrieve, generate, grade) with times, tokens, cost."""
    from serving.telemetry.story import TraceNotFound, render, spans_of

    settings = load_settings(config)
    path = settings.serve.gateway.telemetry.traces_path
    try:
        spans = spans_of(path, request_id)
    except TraceNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("\n".join(json.dumps(s) for s in spans) if as_json else render(spans))


@app.command("query")
def query_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    index_name: Annotated[
        str | None, typer.Option("--index", help="Index to answer from (default: the first served).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Gateway URL (default: from the config's gateway host/port).")] = None,
    mode: Annotated[str | None, typer.Option(help="dense | hybrid | mmr | bm25 (default: the retriever's).")] = None,
    top_k: Annotated[int | None, typer.Option(help="Passages to retrieve.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
) -> None:
    """Ask the running app a question; print the answer and its citations."""
    from rayrag.serve_cli import ask

    settings = load_settings(config)
    gateway = settings.serve.gateway
    ask(
        url or f"http://{gateway.host}:{gateway.port}",
        question,
        index_name or settings.serve.retriever.indexes[0],
        mode,
        top_k,
        as_json,
    )


@app.command("mcp")
def mcp_command(
    url: Annotated[str | None, typer.Option(help="Gateway URL (default: from the config's gateway host/port).")] = None,
    key_env: Annotated[str, typer.Option(help="Environment variable holding the API key (none: no key sent).")] = (
        "RAYRAG_API_KEY"
    ),
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Serve the MCP tools (list_indexes, search, answer, add_documents) on stdin/stdout for an MCP client.

    The tools call the running gateway's REST API with the key from $RAYRAG_API_KEY, so its keys,
    quotas, screens and records apply; the gateway also serves them itself at /mcp (streamable HTTP).
    """
    import os

    from serving.mcp import run_stdio

    gateway = load_settings(config).serve.gateway
    run_stdio(url or f"http://{gateway.host}:{gateway.port}", os.environ.get(key_env) or None)


@app.command("readme")
def readme_command(
    check: Annotated[bool, typer.Option("--check", help="Only say which blocks are stale; exit 1 if any.")] = False,
    path: Annotated[Path, typer.Option(help="The README to render.")] = Path("README.md"),
) -> None:
    """Render the README's figures blocks from the committed reports (eval retrieval, eval gate, bench)."""
    from rayrag.figures import render, stale_blocks

    text = path.read_text()
    stale = stale_blocks(text, path.resolve().parent)
    if check:
        if stale:
            typer.echo(f"{path}: stale figures in block(s) {', '.join(stale)}: run `rayrag readme`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path}: every figures block matches its report")
        return
    path.write_text(render(text, path.resolve().parent))
    typer.echo(f"{path}: rendered {', '.join(stale) or 'nothing (already current)'}")


def main() -> None:
    try:
        app()
    except USER_ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an optional install this command needs (rayrag/extras.py)
        message = missing_extra_message(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
