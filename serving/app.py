"""The Serve application builder: `serve run serving.app:build_app` or `serve run configs/serve.yaml`.

`args` is either the serving config itself or `{"config": "<root yaml>"}` (its `serve:` section
is used, so `make run` and `serve run` share one file), optionally with `set: {dotted.key: value}`
overrides. Deployments are bound with handles injected, each with its own resources and
autoscaling from the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import yaml
from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from core import placement
from core.strict import set_dotted
from indexes.storage import check_readable
from serving.config import ServeConfig, ServeConfigError
from serving.gateway import Gateway
from serving.generator.llama_cpp_engine import LlamaCppGenerator
from serving.generator.vllm_engine import VllmGenerator
from serving.retriever import Retriever
from serving.router import Router


def load_serve_config(args: dict[str, Any] | None) -> ServeConfig:
    """Validate Serve application args into a `ServeConfig` anchored at the working directory."""
    args = dict(args or {})
    raw: dict[str, Any] = {}
    if "config" in args:
        path = Path(args.pop("config"))
        raw = (yaml.safe_load(path.read_text()) or {}).get("serve", {}) or {}
    for dotted, value in (args.pop("set", None) or {}).items():
        set_dotted(raw, dotted, value)
    raw.update(args)
    try:
        return ServeConfig.model_validate(raw).resolved(Path.cwd())
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ServeConfigError(f"invalid serve config: {bad}") from None


def bind(config: ServeConfig) -> Application:
    """Bind the deployment graph: gateway -> (retriever, router -> (primary, fallback))."""
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
    retriever = serve.deployment(Retriever, name="retriever").options(
        **config.retriever.deployment.serve_options(), logging_config=logs
    )
    gateway = serve.deployment(Gateway, name="gateway").options(
        **config.gateway.deployment.serve_options(), logging_config=logs
    )
    return gateway.bind(
        config.gateway,
        retriever.bind(config.retriever),
        router.bind(config.router, primary, fallback),
        indexes=config.retriever.indexes,
        max_top_k=config.retriever.max_top_k,
        embedder=config.retriever.embedder,  # the cache and the graders embed in the gateway itself
    )


def check_placement(config: ServeConfig) -> None:
    """Before anything is deployed: every deployment fits some node, every retriever host reads the index.

    Runs wherever the app is built: in the cluster's build task under `serve deploy`, in the driver
    under `serve run` or `rayrag serve`. Without a Ray connection there is no cluster to check.
    """
    if not ray.is_initialized() or placement.skipped():
        return
    demands = [placement.Demand(f"deployment {name!r}", d.demand()) for name, d in config.deployments().items()]
    placement.check_demands(demands, placement.cluster_shapes())
    retriever = placement.Demand("retriever", config.retriever.deployment.demand())
    placement.check_index_readable(config.retriever.root, config.retriever.indexes, retriever, check_readable)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's builder entry point."""
    config = load_serve_config(args)
    check_placement(config)
    return bind(config)
