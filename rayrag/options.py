"""The options every `rayrag` command shares, and the one way a command loads its settings.

The sub-apps (`keys`, `eval`, `feedback`, `deploy`) import these from here, not from `rayrag.cli`,
which imports them: no import cycle to hide in a function body."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rayrag.config import RootConfig, load_config

DEFAULT_CONFIG = Path("configs/default.yaml")
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
SourceOption = Annotated[
    str | None, typer.Option(help="Directory, glob or URI to index (default: config index_job.source.path).")
]
DetachOption = Annotated[bool, typer.Option(help="Return once ready, leaving the app running on the cluster.")]


def config_path(config: Path) -> Path | None:
    """The default config file is optional (built-in defaults equal it); one named explicitly is not."""
    return None if config == DEFAULT_CONFIG and not config.exists() else config


def load_settings(
    config: Path = DEFAULT_CONFIG, overrides: list[str] | None = None, updates: dict[str, Any] | None = None
) -> RootConfig:
    """The root config from `--config`, `--set` and typed CLI options, checked (a typo is an error
    naming the key)."""
    return load_config(config_path(config), overrides or [], updates)
