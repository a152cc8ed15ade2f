"""The house in one direction, read from the code: every import of every module (function-local ones
included) points down the layers, never up or sideways:

    bench ─▶ rayrag (CLI) ─▶ evaluation ─▶ pipelines ─┐
                                       └─▶ serving ───┴─▶ indexes ─▶ core

The index job and the serving app are siblings over `indexes/`; evaluation stands above both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

# what each package may import of this repository (besides itself)
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "indexes": {"core"},
    "pipelines": {"core", "indexes"},
    "serving": {"core", "indexes"},
    "evaluation": {"core", "indexes", "pipelines", "serving"},
    "rayrag": {"core", "indexes", "pipelines", "serving", "evaluation"},
    "bench": {"core", "indexes", "pipelines", "serving", "evaluation", "rayrag"},
}
# Known and named, to be removed with the one config tree (issue 22): evaluation reads the root
# config's type, which lives with the CLI. Only a type annotation, imported under TYPE_CHECKING.
ALLOWED_TYPE_ONLY = {("evaluation", "rayrag")}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(top-level package, imported only for type checking) for each import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in type_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], id(node) in type_only))
    return found


def violations(root: Path) -> list[str]:
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((root / package).rglob("*.py")):
            for target, type_only in imports_of(path):
                if target == package or target not in MAY_IMPORT or target in allowed:
                    continue
                if type_only and (package, target) in ALLOWED_TYPE_ONLY:
                    continue
                wrong.append(f"{path.relative_to(root)} imports {target}")
    return wrong


def test_every_import_points_down_the_layers():
    assert violations(REPO) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself can fail: an index module that reaches into serving is named."""
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "bad.py").write_text("def f():\n    from serving.config import ServeConfig\n")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rayrag.config import RootConfig\n"
    )
    assert violations(tmp_path) == ["indexes/bad.py imports serving", "pipelines/typed.py imports rayrag"]
