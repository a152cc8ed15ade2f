"""Starting the real serving app on the test cluster, and the small corpus it answers from."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from rayrag.config import RootConfig
from tests.conftest import write_corpus
from tests.integration.conftest import job_config, run_job

CORPUS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet through which lava, volcanic ash "
    "and gases escape from a magma chamber below the surface. Stratovolcanoes such as Mount Fuji are built from "
    "layers of hardened lava and tephra. Eruptions are measured on the volcanic explosivity index.\n",
    "sourdough.md": "# Sourdough bread\n\nSourdough is bread leavened by a starter of wild yeast and lactic acid "
    "bacteria instead of baker's yeast. Feed the starter with flour and water, let the dough rise overnight, "
    "and bake it in a hot Dutch oven so the crust blisters.\n",
    "tides.md": "# Ocean tides\n\nTides are the rise and fall of sea levels caused by the gravitational pull of the "
    "Moon and the Sun on the Earth's oceans. Spring tides happen at new and full moon; neap tides at the quarters.\n",
}
NEW_DOC = {
    "glaciers.md": "# Glaciers\n\nA glacier is a persistent body of dense ice that moves under its own weight. "
    "Glaciers carve U-shaped valleys and leave moraines of rock debris when they retreat.\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_corpus(root: Path) -> Path:
    return write_corpus(root / "corpus", CORPUS)


def indexed_corpus(root: Path) -> RootConfig:
    """The small corpus indexed into `root` by the real job; its index root is `config.indexes.root`."""
    config = job_config(root)
    run_job(config, make_corpus(root))
    return config


def app_args(index_root: Path | str, serve_section: dict) -> dict:
    """`build_app`'s args for a test app: the shared indexes section and the serve section."""
    return {"indexes": {"root": str(index_root)}, "serve": serve_section}


def serve_settings(index_root: Path, port: int, **sections) -> dict:
    """A test app's serve section: every deployment at 0 logical CPUs so index jobs still schedule
    beside it, and its stores beside the index root."""
    zero = {"num_cpus": 0}
    index_root = Path(index_root)  # configs keep roots as strings (a root may be a URI)
    return {
        "retriever": {
            "indexes": ["test"],
            "reload_interval_s": 0.5,
            "close_grace_s": 5,
            "deployment": zero,
        },
        "primary": {"model": "smollm2-135m-instruct", "max_model_len": 2048, "deployment": zero},
        "fallback": {"model": "smollm2-135m-instruct", "n_threads": 1, "deployment": zero},
        "router": {"timeout_s": 60, "deployment": zero},
        "gateway": {
            "port": port,
            "max_input_chars": 2000,
            "max_tokens_cap": 64,
            "default_max_tokens": 16,
            "records": {"path": str(index_root.parent / "records.sqlite")},
            "cache": {"enabled": True, "path": str(index_root.parent / "cache.sqlite"), "threshold": 0.95},
            "history": {"path": str(index_root.parent / "history.sqlite")},
            "deployment": zero,
        },
    } | sections


def wait_for(url: str, predicate, timeout_s: float = 240) -> dict:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=10)
            if predicate(last):
                return last.json()
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{url} never became ready: {getattr(last, 'text', last)}")


def generators_ready(response: httpx.Response, backends: set[str]) -> bool:
    if response.status_code != 200:
        return False
    ready = {g["backend"] for g in response.json()["generators"] if g["ready"]}
    return backends <= ready
