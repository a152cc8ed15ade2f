"""Connecting to Ray from the CLI: a local instance by default, or the cluster a job runs in."""

from __future__ import annotations

import logging
import os

import ray

from core.offline import ensure_offline
from rayrag.config import RayConfig


def connect_ray(config: RayConfig) -> None:
    """Join the configured (or, under `ray job submit`, the surrounding) cluster, else start one here."""
    ensure_offline()
    if ray.is_initialized():
        return
    address = config.address or os.environ.get("RAY_ADDRESS")
    # "local": a new instance here even when another runs on this machine (a bare ray.init() would join it,
    # then refuse num_cpus); join a cluster only when one is configured or Ray's own job runner says so
    local = {"address": "local", "num_cpus": config.num_cpus, "include_dashboard": False}
    kwargs = {"address": address} if address else local
    ray.init(**kwargs, logging_level=logging.WARNING, log_to_driver=True)
