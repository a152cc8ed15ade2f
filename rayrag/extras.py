"""Which optional install (a `pyproject.toml` extra) brings which module, for one clear message.

The base install is what `make run` needs: the index job and the serving app. Evaluation,
benchmarks, the RayService validator and vLLM are extras (`make setup` installs every one). A command
that reaches for a module of a missing extra fails with a `ModuleNotFoundError`; the CLI's edge maps
it here to a message that names the extra and the command that installs it, instead of a traceback.
"""

from __future__ import annotations

# top-level module name -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "ir_measures": "eval",
    "pytrec_eval": "eval",
    "locust": "bench",
    "kubernetes": "k8s",
    "vllm": "cpu",
    "gguf": "cpu",
    "openai": "dev",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """The user's fix for a module that an extra installs, or None if no extra brings it."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return (
        f"this command needs {top!r}, from the [{extra}] extra, which this install lacks: "
        f"`make setup` installs every extra, or `pip install -e '.[{extra}]'` this one"
    )
