"""What the platform shows to the network: no open door without keys, no internal error text,
and the shipped cluster and Kubernetes files with auth on and only the HTTP port declared."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from pydantic import ValidationError

from rayrag.deploy import render_rayservice
from serving.config import ServeConfig
from serving.generator.protocol import GeneratorStatus
from tests.conftest import REPO
from tests.flow_env import Env

pytestmark = pytest.mark.security


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "rayrag.example.com"])
def test_a_network_bind_without_auth_is_refused_unless_asked_for(host):
    with pytest.raises(ValidationError, match="allow_unauthenticated"):
        ServeConfig.model_validate({"gateway": {"host": host}})
    ServeConfig.model_validate({"gateway": {"host": host, "allow_unauthenticated": True}})
    ServeConfig.model_validate({"gateway": {"host": host, "auth": {"enabled": True}}})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_a_loopback_bind_needs_no_auth(host):
    ServeConfig.model_validate({"gateway": {"host": host}})


def test_the_shipped_cluster_config_serves_with_auth_on():
    serve = yaml.safe_load((REPO / "configs" / "cluster" / "rayrag.yaml").read_text())["serve"]
    config = ServeConfig.model_validate(serve)
    assert config.gateway.host == "0.0.0.0" and config.gateway.auth.enabled
    assert config.gateway.auth.env_key_var == "RAYRAG_API_KEY"


def test_the_rayservice_declares_only_the_http_port_and_takes_the_key_from_a_secret():
    manifest = render_rayservice(REPO / "configs" / "cluster" / "serve.yaml", REPO / "configs" / "cluster.yaml",
                                 "example/rayrag:1")  # fmt: skip
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["ports"] == [{"containerPort": 8000}]
    pods = [head] + [g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]]
    for container in pods:
        (env,) = container["env"]
        assert env["name"] == "RAYRAG_API_KEY" and env["valueFrom"]["secretKeyRef"]["name"] == "rayrag-api-key"


def test_readiness_and_steps_carry_no_internal_error_text(tmp_path):
    env = Env(tmp_path)
    secret = "CUDA out of memory at /opt/models/private-weights"

    async def failed() -> GeneratorStatus:
        return GeneratorStatus(backend="vllm", model="m", ready=False, error=secret)

    env.generator.status = failed
    readyz = env.http.get("/readyz")
    assert readyz.status_code == 503 and secret not in readyz.text and "private" not in readyz.text
    reply = env.http.post("/v1/query", json={"query": "What is a volcano?", "index": "test"})
    assert reply.status_code == 200 and reply.json()["steps"][0] == "primary: skipped (not ready: failed)"
    assert secret not in reply.text
    _ready, body = asyncio.run(env.flow.readiness())
    assert body["generators"][0]["error"] == "unavailable"


def test_a_serve_file_binding_the_network_without_auth_is_refused(tmp_path):
    from rayrag.config import ConfigError
    from rayrag.deploy import validate_serve_file

    spec = {"http_options": {"host": "0.0.0.0", "port": 8000},
            "applications": [{"name": "rayrag", "route_prefix": "/", "import_path": "serving.app:build_app",
                              "args": {"set": {"serve.retriever.indexes": ["docs"]}}}]}  # fmt: skip
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"http_options\.host '0\.0\.0\.0'"):
        validate_serve_file(path)
    spec["applications"][0]["args"]["set"]["serve.gateway.auth.enabled"] = True
    path.write_text(yaml.safe_dump(spec))
    assert [app.name for app in validate_serve_file(path)] == ["rayrag"]
    assert validate_serve_file(REPO / "configs" / "cluster" / "serve.yaml")  # the shipped one: auth on
