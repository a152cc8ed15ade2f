"""Placement checks made before anything is deployed: does some node offer what each stage asks?

Ray itself accepts an actor that asks for a resource no node has and leaves it pending forever
(with an autoscaler warning in a log nobody reads). A deploy or an index job is checked first
against the nodes that exist *or can be launched*: live nodes, the node types the autoscaler
publishes in the GCS, and (offline) the node types of a `ray up` cluster YAML. The second check
runs a probe on each node that may host a retriever, so an index root one node cannot read fails
the deploy, not that node's first query. Set RAYRAG_SKIP_PLACEMENT_CHECK=1 on a cluster whose
autoscaler does not publish its node types.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

HIDDEN_PREFIXES = ("node:", "accelerator_type:", "memory", "object_store_memory")


class PlacementError(ValueError):
    """A stage asks for resources no node offers, or a node cannot read what it must serve."""


@dataclass(frozen=True)
class NodeShape:
    """What one node (or one launchable node type) offers."""

    label: str
    resources: dict[str, float]
    node_id: str | None = None  # None: a node type the autoscaler could launch, not a live node

    def fits(self, demand: dict[str, float]) -> bool:
        return all(self.resources.get(name, 0.0) >= amount for name, amount in demand.items() if amount > 0)


@dataclass
class Demand:
    """What one replica or actor of a named stage needs from a single node."""

    who: str
    resources: dict[str, float] = field(default_factory=dict)

    def positive(self) -> dict[str, float]:
        return {k: v for k, v in self.resources.items() if v > 0}


def skipped() -> bool:
    return os.environ.get("RAYRAG_SKIP_PLACEMENT_CHECK", "") not in ("", "0", "false")


def check_demands(demands: Iterable[Demand], shapes: list[NodeShape]) -> None:
    """Raise one `PlacementError` naming every stage that fits on no node (or node type)."""
    problems = [_explain(d, shapes) for d in demands if not any(s.fits(d.positive()) for s in shapes)]
    if problems:
        raise PlacementError("cannot place:\n  " + "\n  ".join(problems))


def _explain(demand: Demand, shapes: list[NodeShape]) -> str:
    offered = sorted({name for s in shapes for name in s.resources if not name.startswith(HIDDEN_PREFIXES)})
    need = demand.positive()
    missing = [name for name in need if name not in offered]
    if missing:
        return (
            f"{demand.who} needs resource {missing[0]!r}, which no node has "
            f"(the cluster offers: {', '.join(offered) or 'nothing'})"
        )
    largest = {name: max(s.resources.get(name, 0.0) for s in shapes) for name in need}
    return f"{demand.who} needs {need} on one node; no node offers that much (most on one node: {largest})"


def live_nodes() -> list[NodeShape]:
    return [
        NodeShape(f"node {n['NodeManagerAddress']} ({n['NodeID'][:8]})", dict(n["Resources"]), n["NodeID"])
        for n in ray.nodes()
        if n["Alive"]
    ]


def launchable_node_types() -> list[NodeShape]:
    """Node types the cluster's autoscaler may launch (empty on a fixed cluster)."""
    from ray._private.state import state  # no public API exposes the autoscaler's node types

    try:
        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older or absent autoscaler: live nodes are all we know
        return []
    groups = config.node_group_configs if config else []
    return [NodeShape(f"node type {g.name}", dict(g.resources)) for g in groups if g.max_count != 0]


def cluster_shapes() -> list[NodeShape]:
    return live_nodes() + launchable_node_types()


def shapes_from_cluster_yaml(cluster: dict[str, Any]) -> list[NodeShape]:
    """Node types of a `ray up` config, with `resources` as each type declares them."""
    return [
        NodeShape(f"node type {name}", {k: float(v) for k, v in (spec.get("resources") or {}).items()})
        for name, spec in (cluster.get("available_node_types") or {}).items()
    ]


def check_index_readable(
    root: str, names: list[str], demand: Demand, check: Callable[[str, str], object], timeout_s: float = 120.0
) -> None:
    """Probe every live node that could host a retriever replica: can it read each index's CURRENT?
    `check(root, name)` raises when it cannot (the caller's: this layer knows no index format)."""
    hosts = [s for s in live_nodes() if s.fits(demand.positive())]
    probes = {
        host.label: _probe.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(host.node_id, soft=False)
        ).remote(root, names, check)
        for host in hosts
    }
    problems = []
    for label, ref in probes.items():
        try:
            problems += [f"{label} {p}" for p in ray.get(ref, timeout=timeout_s)]
        except Exception as exc:  # noqa: BLE001 - a node that cannot even run the probe is a problem too
            problems.append(f"{label} could not run the index check: {exc}")
    if problems:
        raise PlacementError("index not readable where the retriever may run:\n  " + "\n  ".join(problems))


@ray.remote
def _probe(root: str, names: list[str], check: Callable[[str, str], object]) -> list[str]:
    problems = []
    for name in names:
        try:
            check(root, name)
        except Exception as exc:  # noqa: BLE001 - reported to the deployer, with the node's name
            problems.append(f"cannot read index {name!r}: {exc}")
    return problems
