"""`make run`'s set-up compiles no byte-code; its two commands cache what they import instead."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit


def dry_run(*targets: str) -> list[str]:
    """The commands make would run for targets (and `VAR=value` overrides), every prerequisite rebuilt,
    none executed."""
    out = subprocess.run(["make", "-n", "-B", *targets], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_make_run_compiles_nothing_at_install_and_its_commands_cache_what_they_import(tmp_path):
    """Compiling the base's 24k files took 35 s of a fresh `make run` here, of which a run imports a
    quarter: with PYTHONDONTWRITEBYTECODE set (as on this machine), `make run`, `make index` and
    `make serve` must still write the byte-code of what they import, or every process compiles its
    imports again."""
    base = dry_run("setup-base")
    assert any("pip install" in line for line in base)
    assert not [line for line in base if "compileall" in line]
    assert any("compileall" in line for line in dry_run("setup"))  # tests and benchmarks: all compiled
    commands = [line for line in dry_run("run", "index", "serve") if "bin/rayrag " in line]
    assert [shlex.split(line)[4] for line in commands] == ["run", "index", "serve"]
    (tmp_path / "probe.py").write_text("VALUE = 1\n")
    for command in commands:
        words = shlex.split(command)
        prefix = words[: next(i for i, word in enumerate(words) if word.endswith("bin/rayrag"))]
        env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)}
        subprocess.run([*prefix, sys.executable, "-c", "import probe"], env=env, check=True)
        written = list((tmp_path / "__pycache__").glob("probe.*.pyc")) if (tmp_path / "__pycache__").exists() else []
        assert written, f"{command!r} leaves PYTHONDONTWRITEBYTECODE set: nothing it imports is cached"
        for cached in written:
            cached.unlink()


def test_the_project_installs_through_uv_and_torch_through_pip_with_a_pip_override():
    """pip took 41 s of the base's set-up from a warm cache here, uv 4 s (10 s cold) for the same
    versions: every install of the project goes through INSTALL (uv). torch alone goes through pip,
    whose configuration is what knows where the CPU wheel lies; INSTALL set to pip restores pip."""
    for target in ("setup-base", "setup"):
        project = [line for line in dry_run(target) if " -e " in line or "requirements-nodeps" in line]
        assert project and all("bin/uv pip install" in line for line in project), project
    torch = [line for line in dry_run("setup-base") if "torch==" in line]
    assert len(torch) == 1 and "-m pip install" in torch[0] and "uv" in torch[0]
    pip = "python -m pip install -q --no-compile"
    overridden = dry_run("setup", f"INSTALL={pip}")
    assert not [line for line in overridden if "bin/uv" in line]
    assert sum(line.startswith(pip) for line in overridden) == 3
