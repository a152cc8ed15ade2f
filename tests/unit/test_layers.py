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


def imports_of(path: Path) -> list[str]:
    """The dotted name of each import in the file, type-checking ones included (a type-only import up
    the layers still ties the layers together); a `from m import x` gives both `m` and `m.x` (x may be
    a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def violations(root: Path) -> list[str]:
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((root / package).rglob("*.py")):
            for target in sorted({name.split(".")[0] for name in imports_of(path)}):
                if target == package or target not in MAY_IMPORT or target in allowed:
                    continue
                wrong.append(f"{path.relative_to(root)} imports {target}")
    return wrong


def module_cycles(root: Path) -> list[list[str]]:
    """Modules that import each other, directly or around a loop (function-local imports included:
    an import moved into a function body hides a cycle from Python, not from this)."""
    files = {}
    for package in MAY_IMPORT:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    graph = {name: {t for t in imports_of(path) if t in files and t != name} for name, path in files.items()}
    return _strongly_connected(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; the components of more than one module, each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([*component, node]))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_module_imports_itself_around_a_loop():
    assert module_cycles(REPO) == []


def test_a_cycle_hidden_in_a_function_body_is_caught(tmp_path):
    (tmp_path / "rayrag").mkdir()
    (tmp_path / "rayrag" / "cli.py").write_text("from rayrag.sub import app\n")
    (tmp_path / "rayrag" / "sub.py").write_text("def load():\n    from rayrag.cli import DEFAULT\n")
    assert module_cycles(tmp_path) == [["rayrag.cli", "rayrag.sub"]]


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
