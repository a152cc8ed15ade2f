"""The root config: one YAML file composed of sections, each owned by the layer that reads it.

    indexes:    where indexes live and what embeds them (indexes/config.py), shared by all below
    index_job:  the index job's stages (pipelines/config.py)
    serve:      the serving app's deployments (serving/config.py)
    eval:       `rayrag eval` (evaluation/config.py)
    ray:        how the CLI reaches Ray

Loading is explicit (never at import time) and goes through `core.config_file.load_model`, the
loader `serving.app.build_app` uses too: overrides checked like the file, an old-layout file told
what moved, every relative path anchored at the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import PositiveInt, model_validator

from core.config_file import ConfigError, load_model, read_yaml
from core.strict import StrictModel
from evaluation.config import EvalConfig, EvalSettings
from indexes.config import IndexesConfig
from pipelines.config import IndexJobConfig
from serving.config import ServeConfig, ServingSettings

__all__ = ["ConfigError", "RayConfig", "RootConfig", "load_config", "read_yaml"]


class RayConfig(StrictModel):
    """How to reach Ray: null address starts (or joins, under `ray job submit`) a local instance."""

    address: str | None = None
    num_cpus: PositiveInt | None = None


class RootConfig(StrictModel):
    """Everything `configs/*.yaml` may hold."""

    indexes: IndexesConfig = IndexesConfig()
    index_job: IndexJobConfig = IndexJobConfig()
    serve: ServeConfig = ServeConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> RootConfig:
        self.index_job.check_chunks_fit(self.indexes.embedder)
        return self

    def serving(self) -> ServingSettings:
        """What the serving app is built from: the shared `indexes:` section and `serve:`."""
        return ServingSettings(indexes=self.indexes, serve=self.serve)

    def evaluation(self) -> EvalSettings:
        """What `rayrag eval` reads: every section but `ray:`."""
        return EvalSettings(indexes=self.indexes, index_job=self.index_job, serve=self.serve, eval=self.eval)


def load_config(
    path: Path | str | None,
    overrides: list[str] | tuple[str, ...] = (),
    updates: dict[str, Any] | None = None,
    base: Path | None = None,
) -> RootConfig:
    """Validate a YAML file plus `key=value` overrides (parsed as YAML) and typed `updates` (CLI options),
    with relative paths anchored at `base` (default: the working directory)."""
    raw = read_yaml(Path(path)) if path else {}
    return load_model(RootConfig, raw, str(path or "<defaults>"), overrides, updates, base or Path.cwd())
