"""The Serve application builder: `serve run serving.app:build_app` or `serve run configs/serve.yaml`.

`args` name a root config file (its `indexes:` and `serve:` sections are used, so `make run` and
`serve run` share one file) with `set: {dotted.key: value}` overrides, or give those sections
inline (see `load_serving`). Deployments are bound with handles injected, each with its own resources and
autoscaling from the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from core import placement
from core.config_file import load_model, read_yaml
from indexes.storage import check_readable
from serving.config import ServingSettings
from serving.gateway import Gateway
from serving.generator.llama_cpp_engine import LlamaCppGenerator
from serving.generator.vllm_engine import VllmGenerator
from serving.retriever import Retriever
from serving.router import Router

# Root-config sections the serving app does not read; `rayrag` checks them (rayrag/config.py).
OTHER_SECTIONS = ("index_job", "eval", "ray")


def load_serving(args: dict[str, Any] | None) -> ServingSettings:
    """Serve application args -> the settings the app is built from, anchored at the working directory.

    `args` is `{"config": "<root yaml>", "set": {"serve.gateway.port": 8001, ...}}`, the sections
    themselves (`{"indexes": {...}, "serve": {...}}`), or both (sections given win over the file's).
    The file goes through the same loader as the CLI's, so the same typo gets the same message."""
    args = dict(args or {})
    path = args.pop("config", None)
    overrides = args.pop("set", None) or {}
    raw = read_yaml(Path(path)) if path else {}
    raw = {section: value for section, value in raw.items() if section not in OTHER_SECTIONS} | args
    return load_model(ServingSettings, raw, str(path or "<serve args>"), updates=overrides, base=Path.cwd())


def bind(settings: ServingSettings) -> Application:
    """Bind the deployment graph: gateway -> (retriever, router -> (primary, fallback)); with
    `retriever.placement: gateway` there is no retriever deployment: the gateway opens the indexes."""
    config = settings.serve
    generators = config.generators_in_chain()
    logs = config.logging.serve()
    primary = fallback = None
    if "primary" in generators:
        primary = serve.deployment(VllmGenerator, name="vllm").options(
            **config.primary.deployment.serve_options(), logging_config=logs
        )
        primary = primary.bind(config.primary)
    if "fallback" in generators:
        fallback = serve.deployment(LlamaCppGenerator, name="llama_cpp").options(
            **config.fallback.deployment.serve_options(), logging_config=logs
        )
        fallback = fallback.bind(config.fallback)
    router = serve.deployment(Router, name="router").options(
        **config.router.deployment.serve_options(), logging_config=logs
    )
    retriever = None  # placement: gateway, where each gateway replica opens the indexes itself
    if not config.retriever.colocated:
        retriever = serve.deployment(Retriever, name="retriever").options(
            **config.retriever.deployment.serve_options(), logging_config=logs
        )
        retriever = retriever.bind(config.retriever, settings.indexes)
    gateway = serve.deployment(Gateway, name="gateway").options(
        **config.gateway.deployment.serve_options(), logging_config=logs
    )
    return gateway.bind(
        config.gateway,
        retriever,
        router.bind(config.router, primary, fallback, cold=config.cold_generators()),
        indexes=config.retriever.indexes,
        max_top_k=config.retriever.max_top_k,
        coalesce=config.retriever.coalesce,
        colocated=config.retriever if retriever is None else None,
        embedder=settings.indexes.embedder,  # the cache and the graders embed in the gateway itself
        index_settings=settings.indexes,  # what an index job started over HTTP writes with
    )


def check_placement(settings: ServingSettings) -> None:
    """Before anything is deployed: every deployment fits some node, every retriever host reads the index.

    Runs wherever the app is built: in the cluster's build task under `serve deploy`, in the driver
    under `serve run` or `rayrag serve`. Without a Ray connection there is no cluster to check.
    """
    if not ray.is_initialized() or placement.skipped():
        return
    config = settings.serve
    demands = [placement.Demand(f"deployment {name!r}", d.demand()) for name, d in config.deployments().items()]
    placement.check_demands(demands, placement.cluster_shapes())
    host = "gateway" if config.retriever.colocated else "retriever"
    retriever = placement.Demand(host, config.deployments()[host].demand())
    placement.check_index_readable(settings.indexes.root, config.retriever.indexes, retriever, check_readable)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's builder entry point."""
    settings = load_serving(args)
    check_placement(settings)
    return bind(settings)
