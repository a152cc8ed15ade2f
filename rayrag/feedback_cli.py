"""`rayrag feedback export`: answers with their users' feedback, as JSON lines for evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rayrag.options import DEFAULT_CONFIG, ConfigOption, load_settings
from serving.stores.records import RecordStore

feedback_app = typer.Typer(help="Feedback users left on answers (POST /v1/feedback).")


@feedback_app.command("export")
def export(
    out: Annotated[Path | None, typer.Option(help="JSONL file to write (default: stdout).")] = None,
    all_records: Annotated[
        bool, typer.Option("--all", help="Every answer record, not only those with feedback.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write each answer record (prompt, index version, chunks, model, usage) with its feedback."""

    settings = load_settings(config)
    store = RecordStore(settings.serve.gateway.records.path)
    stream = out.open("w") if out else sys.stdout
    count = 0
    for record in store.export(with_feedback_only=not all_records):
        stream.write(json.dumps(record) + "\n")
        count += 1
    if out:
        stream.close()
        typer.echo(f"wrote {count} records to {out}", err=True)
