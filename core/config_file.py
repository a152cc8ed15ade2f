"""The one way a config file becomes a validated model, for the CLI and for the serving app's builder.

A file is read as YAML, `--set a.b=c` overrides and typed CLI updates are applied to the raw mapping
(so they are checked exactly like the file), a file in the layout before the one config tree is
refused with what moved where, and every relative path field is anchored at the caller's working
directory, so a Serve replica, whatever its own directory, opens the same files as the driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.strict import set_dotted

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and each bad key."""


class AnchoredPath:
    """Marks a `str` field that holds a path or a filesystem URI (`Annotated[str, ANCHORED]`): anchored
    like a `Path` field unless it is a URI. Fields that name a packaged model (`embedder.model`) are
    plain strings and are left alone."""


ANCHORED = AnchoredPath()

# The layout before the one config tree: each old key, and where it lives now.
MOVED = {
    "index.root": "indexes.root",
    "index": "index_job (index.name is index_job.name, index.keep_versions is index_job.keep_versions, ...)",
    "embedder": "indexes.embedder (shared by the index job, the retriever and evaluation)",
    **{section: f"index_job.{section}" for section in ("source", "parse", "chunker", "embed", "backend")},
    "serve.retriever.root": "indexes.root (one root for the index job and the retriever)",
    "serve.retriever.embedder": "indexes.embedder (one embedder for the index job and the retriever)",
    "serve.primary.kind": "nothing (the key is gone: serve.primary is always vLLM)",
    "serve.fallback.kind": "nothing (the key is gone: serve.fallback is always llama.cpp)",
}


def load_model(
    model: type[M],
    raw: dict[str, Any],
    origin: str,
    overrides: list[str] | tuple[str, ...] = (),
    updates: dict[str, Any] | None = None,
    base: Path | None = None,
) -> M:
    """Validate `raw` (a file's mapping, see `read_yaml`) plus `key=value` overrides (parsed as YAML)
    and typed `updates`; anchor relative paths at `base` unless it is None."""
    check_layout(raw, origin)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like section.key=value")
        _set_key(raw, key.strip(), yaml.safe_load(value))
    for key, value in (updates or {}).items():
        _set_key(raw, key, value)
    try:
        validated = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
    return anchored(validated, base) if base is not None else validated


def check_layout(raw: dict[str, Any], origin: str) -> None:
    """An old file fails with every key it must move, not with a list of "unknown key"."""
    found = []
    for old, new in MOVED.items():
        node: Any = raw
        for part in old.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            found.append(f"  {old}: moved to {new}")
    if found:
        raise ConfigError(
            f"config {origin} uses the old layout (before the one config tree); move these keys "
            "(configs/default.yaml shows the layout):\n" + "\n".join(found)
        )


def anchored(model: M, base: Path) -> M:
    """A copy whose relative `Path` fields, and `str` fields marked `ANCHORED` that are not URIs, are
    absolute against `base`: every path field of every section, with no list to keep up to date."""
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        marked = any(isinstance(m, AnchoredPath) for m in field.metadata)
        if isinstance(value, Path) or (marked and isinstance(value, str) and "://" not in value):
            updates[name] = type(value)((base / os.fspath(value)).resolve())
        elif isinstance(value, BaseModel):
            updates[name] = anchored(value, base)
        elif isinstance(value, list | tuple) and any(isinstance(item, BaseModel) for item in value):
            updates[name] = type(value)(anchored(i, base) if isinstance(i, BaseModel) else i for i in value)
    return model.model_copy(update=updates)


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
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    for old, new in MOVED.items():
        if dotted == old or dotted.startswith(f"{old}."):
            raise ConfigError(f"override {dotted!r}: {old} moved to {new}")
    try:
        set_dotted(raw, dotted, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
