"""`rayrag feedback export`: answers with their users' feedback, as JSON lines for evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from serving.stores.records import RecordStore

feedback_app = typer.Typer(help="Feedback users left on answers (POST /v1/feedback).")


@feedback_app.command("export")
def export(
    out: Annotated[Path | None, typer.Option(help="JSONL file to write (default: stdout).")] = None,
    all_records: Annotated[
        bool, typer.Option("--all", help="Every answer record, not only those with feedback.")
    ] = False,
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")] = Path("configs/default.yaml"),
) -> None:
    """Write each answer record (prompt, index version, chunks, model, usage) with its feedback."""
    from rayrag.cli import _config_path
    from rayrag.config import load_config

    settings = load_config(_config_path(config))
    store = RecordStore(settings.serve.resolved(Path.cwd()).gateway.records.path)
    stream = out.open("w") if out else sys.stdout
    count = 0
    for record in store.export(with_feedback_only=not all_records):
        stream.write(json.dumps(record) + "\n")
        count += 1
    if out:
        stream.close()
        typer.echo(f"wrote {count} records to {out}", err=True)
