"""Checks and renders for cluster deploys: `rayrag deploy check` and `rayrag deploy rayservice`.

`ray up` and `serve deploy` accept a lot silently: Ray's Serve schema ignores unknown keys, and an
actor asking for a resource no node has just waits. Here every file is checked the way the
cluster will read it: the `ray up` YAML against Ray's own JSON schema (shipped in the ray wheel),
the Serve file against Ray's `ServeDeploySchema` plus an unknown-key walk, each app's args
against our strict `ServeConfig`, and every stage's resources against the node types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from core.placement import Demand, NodeShape, check_demands, shapes_from_cluster_yaml
from rayrag.config import ConfigError, RootConfig, load_config, read_yaml
from serving.app import load_serving
from serving.config import ServeConfig, is_loopback

BUILDER = "serving.app:build_app"
RAYSERVICE_SCHEMA = Path(__file__).resolve().parents[1] / "configs" / "k8s" / "rayservice.schema.json"


@dataclass
class ServeApp:
    """One application of a Serve file, with its args validated as a `ServeConfig`."""

    name: str
    config: ServeConfig


def validate_cluster_yaml(path: Path) -> dict[str, Any]:
    """A `ray up` config checked against `ray/autoscaler/ray-schema.json`; errors name the key."""
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = read_yaml(path)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cluster), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]
        raise ConfigError(f"invalid cluster config {path}:\n" + "\n".join(lines))
    return cluster


def unknown_keys(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Dotted paths of keys in `data` that `model` (recursively) does not define."""
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        found += _nested_unknown(field.annotation, value, f"{where}{key}")
    return found


def _nested_unknown(annotation: Any, value: Any, where: str) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return unknown_keys(annotation, value, f"{where}.")
    args = get_args(annotation)
    if isinstance(value, list) and args:
        return [k for i, item in enumerate(value) for k in _nested_unknown(args[0], item, f"{where}[{i}]")]
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return _nested_unknown(models[0], value, where) if models and isinstance(value, dict) else []


def validate_serve_file(path: Path) -> list[ServeApp]:
    """A `serve deploy` file: Ray's schema, no unknown keys, and our strict args for each rayrag app."""
    from ray.serve.schema import ServeDeploySchema

    raw = read_yaml(path)
    unknown = unknown_keys(ServeDeploySchema, raw)
    if unknown:
        raise ConfigError(f"invalid serve config {path}: unknown key(s) {', '.join(unknown)}")
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid serve config {path}: {exc}") from None
    apps = [
        ServeApp(app.name, load_serving(app.args).serve) for app in schema.applications if app.import_path == BUILDER
    ]
    host = schema.http_options.host if schema.http_options else "127.0.0.1"
    for app in apps:  # the proxy's bind is what the network reaches, whatever the app's own host says
        gateway = app.config.gateway
        if not is_loopback(host) and not gateway.auth.enabled and not gateway.allow_unauthenticated:
            raise ConfigError(
                f"{path}: http_options.host {host!r} is reachable from the network while app {app.name!r} has "
                "gateway.auth off: turn it on, or set gateway.allow_unauthenticated: true to serve without keys"
            )
    return apps


def serve_demands(apps: list[ServeApp]) -> list[Demand]:
    return [
        Demand(f"app {app.name!r} deployment {name!r}", deployment.demand())
        for app in apps
        for name, deployment in app.config.deployments().items()
    ]


def job_demands(config: RootConfig) -> list[Demand]:
    return [
        Demand("index job parse actors", config.index_job.parse.demand()),
        Demand("index job embed actors", config.index_job.embed.demand()),
    ]


def live_shapes(dashboard: str) -> list[NodeShape]:
    """Alive nodes of a running cluster, read through its dashboard (no driver connection needed)."""
    from ray.util.state import list_nodes

    return [
        NodeShape(f"node {n.node_ip} ({n.node_id[:8]})", dict(n.resources_total), n.node_id)
        for n in list_nodes(address=dashboard, limit=10_000)
        if n.state == "ALIVE"
    ]


def check_deploy(
    serve_file: Path | None, config_file: Path | None, cluster_file: Path | None, dashboard: str | None
) -> list[str]:
    """Every check at once; returns what was checked, raises on the first kind of problem."""
    done, demands, shapes = [], [], []
    if cluster_file:
        shapes += shapes_from_cluster_yaml(validate_cluster_yaml(cluster_file))
        done.append(f"{cluster_file}: valid against Ray's cluster schema ({len(shapes)} node types)")
    if serve_file:
        apps = validate_serve_file(serve_file)
        demands += serve_demands(apps)
        done.append(f"{serve_file}: valid, {len(apps)} rayrag app(s)")
    if config_file:
        root = load_config(config_file)
        demands += job_demands(root)
        if not serve_file:  # its serve section is what a serve file built from it would deploy
            demands += serve_demands([ServeApp(root.serve.app_name, root.serve)])
        done.append(f"{config_file}: valid root config")
    if dashboard:
        shapes += live_shapes(dashboard)
        done.append(f"{dashboard}: {sum(1 for s in shapes if s.node_id)} live node(s)")
    if shapes and demands:
        check_demands(demands, shapes)
        done.append(f"every stage fits a node: {', '.join(d.who for d in demands)}")
    return done


def render_rayservice(serve_file: Path, cluster_file: Path, image: str, name: str = "rayrag") -> dict[str, Any]:
    """A KubeRay `RayService`: the Serve file as serveConfigV2, one worker group per node type."""
    import ray

    validate_serve_file(serve_file)
    cluster = validate_cluster_yaml(cluster_file)
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    workers = [_worker_group(n, spec, image) for n, spec in types.items() if n != head]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": serve_file.read_text(),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    # the dashboard listens inside the pod network only (the operator reaches it there);
                    # the one port the pods declare is Serve's HTTP port, and the gateway's key comes from a secret
                    "rayStartParams": _start_params(types[head], {"dashboard-host": "0.0.0.0"}),
                    "template": _pod(image, "ray-head", types[head], ports=[8000]),
                },
                "workerGroupSpecs": workers,
            },
        },
    }


def _worker_group(name: str, spec: dict[str, Any], image: str) -> dict[str, Any]:
    return {
        "groupName": name.replace("_", "-"),
        "replicas": spec.get("min_workers", 0),
        "minReplicas": spec.get("min_workers", 0),
        "maxReplicas": spec.get("max_workers", 1),
        "rayStartParams": _start_params(spec, {}),
        "template": _pod(image, "ray-worker", spec),
    }


def _start_params(spec: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    """`ray start` flags as KubeRay wants them (strings); custom resources as a JSON string."""
    custom = {k: v for k, v in (spec.get("resources") or {}).items() if k not in ("CPU", "GPU")}
    params = dict(extra)
    if "CPU" in (spec.get("resources") or {}):
        params["num-cpus"] = f"{spec['resources']['CPU']:g}"
    if custom:
        params["resources"] = json.dumps(json.dumps(custom))  # KubeRay passes it through a shell
    return params


API_KEY_SECRET = "rayrag-api-key"  # kubectl create secret generic rayrag-api-key --from-literal=key=...
API_KEY_ENV = {"name": "RAYRAG_API_KEY", "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": "key"}}}


def _pod(image: str, container: str, spec: dict[str, Any], ports: list[int] | None = None) -> dict[str, Any]:
    """A pod sized from the node type's CPU/GPU (4 GiB per CPU; at least 2 CPUs for Ray itself)."""
    resources = spec.get("resources") or {}
    cpus = max(int(resources.get("CPU", 0)), 2)
    limits = {"cpu": str(cpus), "memory": f"{4 * cpus}Gi"}
    if resources.get("GPU"):
        limits["nvidia.com/gpu"] = str(int(resources["GPU"]))
    body: dict[str, Any] = {
        "name": container,
        "image": image,
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": [API_KEY_ENV],  # serve.gateway.auth.env_key_var of configs/cluster/rayrag.yaml
    }
    if ports:
        body["ports"] = [{"containerPort": p} for p in ports]
    return {"spec": {"containers": [body]}}


def validate_rayservice(manifest: dict[str, Any]) -> None:
    """The manifest against our RayService schema, its pod templates against Kubernetes' own
    models (a key the model drops is an unknown key), and serveConfigV2 against Ray's schema."""
    import jsonschema

    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(manifest))
    if errors:
        raise ConfigError("invalid RayService: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors))
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        _check_pod_template(group["template"], group.get("groupName", "head"))
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    from ray.serve.schema import ServeDeploySchema

    unknown = unknown_keys(ServeDeploySchema, serve)
    if unknown:
        raise ConfigError(f"invalid RayService serveConfigV2: unknown key(s) {', '.join(unknown)}")
    ServeDeploySchema.model_validate(serve)


def _check_pod_template(template: dict[str, Any], group: str) -> None:
    from kubernetes.client import ApiClient

    client = ApiClient()
    parsed = client.deserialize(SimpleNamespace(data=json.dumps(template)), "V1PodTemplateSpec")
    if client.sanitize_for_serialization(parsed) != template:
        raise ConfigError(f"group {group!r}: pod template has keys or values Kubernetes' PodTemplateSpec does not")
