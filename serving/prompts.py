"""Versioned prompt templates from `configs/prompts/*.yaml`, picked by `name` or `name@version`.

A template file holds `name`, `version`, `description` and a Jinja2 `system` template rendered with the
retrieved passages. Files are read once when the gateway starts (a new prompt version is a deploy,
like code); the latest version of a name is its default unless a version is pinned.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml
from pydantic import PositiveInt

from core.strict import StrictModel
from serving.errors import NotFound
from serving.protocol import ScoredChunk


class PromptTemplate(StrictModel):
    name: str
    version: PositiveInt
    description: str = ""
    system: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, passages: list[ScoredChunk]) -> str:
        numbered = [{"n": n, **p.model_dump()} for n, p in enumerate(passages, start=1)]
        return _ENV.from_string(self.system).render(passages=numbered).strip()


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


class PromptRegistry:
    def __init__(self, templates: list[PromptTemplate], default: str) -> None:
        self.templates = {t.ref: t for t in templates}
        self.latest: dict[str, PromptTemplate] = {}
        for t in sorted(templates, key=lambda t: t.version):
            self.latest[t.name] = t
        self.default = self.get(default)

    @classmethod
    def load(cls, directory: Path, default: str) -> PromptRegistry:
        templates = [
            PromptTemplate.model_validate(yaml.safe_load(p.read_text())) for p in sorted(directory.glob("*.yaml"))
        ]
        return cls(templates, default)

    def get(self, ref: str | None) -> PromptTemplate:
        """`name@version`, or `name` for its latest version, or None for the configured default."""
        if ref is None:
            return self.default
        found = self.templates.get(ref) or (self.latest.get(ref) if "@" not in ref else None)
        if found is None:
            raise NotFound(
                f"prompt {ref!r} does not exist; known: {sorted(self.templates)}",
                param="prompt",
                code="prompt_not_found",
            )
        return found
