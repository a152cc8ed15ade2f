"""The root config: one YAML file composing every job's and deployment's settings.

Loading is explicit (never at import time). `--set a.b=c` overrides are applied to the raw YAML
before validation, so they are checked exactly like the file. Validation errors are turned into
one `ConfigError` that names the file and each bad key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.strict import set_dotted
from evaluation.config import EvalConfig
from pipelines.config import IndexJobConfig
from serving.config import ServeConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class RootConfig(IndexJobConfig):
    """Everything `configs/*.yaml` may hold: the index job's sections plus `serve:` and `eval:`."""

    serve: ServeConfig = ServeConfig()
    eval: EvalConfig = EvalConfig()


def load_config(
    path: Path | str | None, overrides: list[str] | tuple[str, ...] = (), updates: dict[str, Any] | None = None
) -> RootConfig:
    """Validate a YAML file plus `key=value` overrides (parsed as YAML) and typed `updates` (CLI options)."""
    raw = read_yaml(Path(path)) if path else {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like section.key=value")
        _set_key(raw, key.strip(), yaml.safe_load(value))
    for key, value in (updates or {}).items():
        _set_key(raw, key, value)
    try:
        return RootConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path or "<defaults>"))) from None


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        given = f" (got {error['input']!r})" if error["type"] not in ("extra_forbidden", "missing") else ""
        lines.append(f"  {key}: {message}{given}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    try:
        set_dotted(raw, dotted, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
