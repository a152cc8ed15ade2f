"""Cluster deploy files and placement checks, without a cluster: the shipped files are valid, and
a typo or a resource no node offers is named before anything is deployed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from core.placement import Demand, NodeShape, PlacementError, check_demands
from rayrag.config import ConfigError, load_config
from rayrag.deploy import (
    check_deploy,
    render_rayservice,
    validate_cluster_yaml,
    validate_rayservice,
    validate_serve_file,
)
from serving.config import DeploymentConfig
from tests.conftest import REPO

pytestmark = pytest.mark.unit
CLUSTER = REPO / "configs" / "cluster.yaml"
SERVE = REPO / "configs" / "cluster" / "serve.yaml"
ROOT = REPO / "configs" / "cluster" / "rayrag.yaml"


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_cluster_files_are_valid_and_every_stage_fits_a_node_type():
    done = check_deploy(SERVE, ROOT, CLUSTER, None)
    assert any("every stage fits a node" in line for line in done)
    assert "embed actors" in done[-1] and "'vllm'" in done[-1]


def test_a_typo_in_the_cluster_yaml_is_named(tmp_path):
    cluster = yaml.safe_load(CLUSTER.read_text())
    cluster["available_node_types"]["gpu_worker"]["max_worker"] = 4
    with pytest.raises(ConfigError, match=r"available_node_types.gpu_worker: Additional properties .*'max_worker'"):
        validate_cluster_yaml(write(tmp_path / "c.yaml", cluster))


def test_unknown_keys_in_a_serve_file_are_named_even_where_ray_ignores_them(tmp_path):
    serve = yaml.safe_load(SERVE.read_text())
    serve["applications"][0]["route_prefx"] = "/"
    serve["http_options"]["prot"] = 8000
    with pytest.raises(ConfigError, match=r"applications\[0\].route_prefx, http_options.prot"):
        validate_serve_file(write(tmp_path / "s.yaml", serve))


def test_unknown_keys_in_the_app_args_are_named(tmp_path):
    serve = yaml.safe_load(SERVE.read_text())
    serve["applications"][0]["args"]["set"] = {"serve.retriever.top_kk": 3}
    with pytest.raises(ConfigError, match=r"serve\.retriever\.top_kk: unknown key"):
        validate_serve_file(write(tmp_path / "s.yaml", serve))


def test_a_resource_no_node_type_offers_is_named(tmp_path):
    root = yaml.safe_load(ROOT.read_text())
    root["serve"]["retriever"]["deployment"]["resources"] = {"retrieval_nodes": 1}
    with pytest.raises(PlacementError, match="'retriever' needs resource 'retrieval_nodes', which no node has"):
        check_deploy(None, write(tmp_path / "r.yaml", root), CLUSTER, None)
    serve = yaml.safe_load(SERVE.read_text())
    serve["applications"][0]["args"]["config"] = str(tmp_path / "r.yaml")
    with pytest.raises(PlacementError, match="retrieval_nodes"):
        check_deploy(write(tmp_path / "s.yaml", serve), None, CLUSTER, None)


def test_placement_explains_too_much_and_accepts_what_fits():
    shapes = [NodeShape("node a", {"CPU": 4, "GPU": 1, "embed_node": 1}), NodeShape("node b", {"CPU": 16})]
    check_demands([Demand("x", {"CPU": 8}), Demand("y", {"CPU": 2, "GPU": 1, "embed_node": 1})], shapes)
    with pytest.raises(PlacementError, match=r"z needs \{'CPU': 8.0, 'GPU': 1.0\} on one node; .*'GPU': 1"):
        check_demands([Demand("z", {"CPU": 8.0, "GPU": 1.0})], shapes)


def test_resources_reach_the_replica_options_and_builtin_names_are_refused():
    options = DeploymentConfig(num_cpus=1, resources={"retrieval_node": 1}).serve_options()
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0, "resources": {"retrieval_node": 1}}
    with pytest.raises(ConfigError, match=r"serve\.retriever\.deployment\.resources: .*'GPU' is not custom"):
        load_config(None, ["serve.retriever.deployment.resources={GPU: 1}"])
    with pytest.raises(ConfigError, match=r"index_job\.parse\.resources"):
        load_config(None, ["index_job.parse.resources={parse_node: -1}"])


def test_the_rayservice_carries_the_serve_file_and_one_group_per_worker_type():
    manifest = render_rayservice(SERVE, CLUSTER, "example/rayrag:1")
    validate_rayservice(manifest)
    spec = manifest["spec"]
    assert yaml.safe_load(spec["serveConfigV2"]) == yaml.safe_load(SERVE.read_text())
    groups = {g["groupName"]: g for g in spec["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu-worker", "gpu-worker"}
    gpu = groups["gpu-worker"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert '\\"embed_node\\": 1' in gpu["rayStartParams"]["resources"] and gpu["maxReplicas"] == 4


@pytest.mark.parametrize(
    "where, value, message",
    [
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplica"), 3, "maxReplica"),
        (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolcy"), "x",
         "PodTemplateSpec"),
        (("spec", "serveConfigV2"), "applications: []\nproxy_locaton: EveryNode\n", "proxy_locaton"),
    ],
)  # fmt: skip
def test_a_broken_rayservice_is_refused(where, value, message):
    manifest = copy.deepcopy(render_rayservice(SERVE, CLUSTER, "example/rayrag:1"))
    node = manifest
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_rayservice(manifest)


def test_the_cli_names_the_bad_key_and_writes_the_manifest(tmp_path):
    import subprocess
    import sys

    cluster = yaml.safe_load(CLUSTER.read_text())
    cluster["idle_timeout_minute"] = 5
    bad = subprocess.run([sys.executable, "-m", "rayrag", "deploy", "check", "--cluster", str(write(tmp_path / "c.yaml", cluster))],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert bad.returncode == 2 and "'idle_timeout_minute' was unexpected" in bad.stderr
    out = tmp_path / "rayservice.yaml"
    made = subprocess.run([sys.executable, "-m", "rayrag", "deploy", "rayservice", "--image", "x/rayrag:1", "-o", str(out)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert yaml.safe_load(out.read_text())["kind"] == "RayService"
