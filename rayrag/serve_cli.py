"""`rayrag serve` and `rayrag query`: thin wrappers over Ray Serve and the gateway's HTTP API."""

from __future__ import annotations

import importlib.util
import json
import time

import httpx
import typer

from indexes.layout import IndexNotFoundError
from indexes.storage import check_readable
from rayrag.config import RootConfig
from serving.config import ServeConfig


class ServeStartError(RuntimeError):
    """The app did not become ready; the message says what /readyz reported."""


def start_app(settings: RootConfig, wait_s: float = 600.0) -> str:
    """Deploy the app on the connected Ray cluster and wait until /readyz says yes; return its URL."""
    from ray import serve

    from serving.app import bind, check_placement

    serving = settings.serving()
    config: ServeConfig = serving.serve
    check_placement(serving)
    serve.start(http_options={"host": config.gateway.host, "port": config.gateway.port})
    serve.run(bind(serving), name=config.app_name, route_prefix=config.route_prefix, blocking=False)
    url = f"http://{config.gateway.host}:{config.gateway.port}"
    wait_ready(url, wait_s, config.app_name)
    return url


def preflight(settings: RootConfig, building: str | None = None) -> None:
    """Fail in the shell, before Ray starts, not in a replica, when a served index was never built
    (but `building`, the one `rayrag run` is about to build) or the primary's engine is missing."""
    config = settings.serve
    if config.primary is not None and not _installed("vllm"):
        raise ServeStartError(
            "serve.primary is a vLLM generator, and vLLM is not installed here (the [cpu] extra, or [gpu]): "
            "`make setup` installs it, or set serve.primary: null to answer with llama.cpp"
        )
    for name in config.retriever.indexes:
        if name == building:
            continue
        try:
            check_readable(settings.indexes.root, name)
        except IndexNotFoundError as exc:
            raise IndexNotFoundError(f"{exc}: build it first with `rayrag index --index {name}`") from None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # what an import hook says of a module it hides
        return False


def wait_ready(url: str, wait_s: float, app_name: str) -> dict:
    """Poll /readyz; give up early with Serve's own message if the app failed to deploy."""
    from ray import serve

    deadline, last = time.monotonic() + wait_s, "no answer"
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "DEPLOY_FAILED":
            raise ServeStartError(f"the app failed to deploy: {app.message}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            if response.status_code == 200:
                return response.json()
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise ServeStartError(f"app at {url} not ready after {wait_s:.0f}s: {last}")


def examples(url: str, settings: RootConfig) -> str:
    """Ready-to-paste client examples for the served app."""
    model = f"rag:{settings.serve.retriever.indexes[0]}"
    return f"""
rayrag is serving on {url}  (OpenAPI: {url}/docs)

  Chat page: open {url}/ in a browser

  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "How do I read a CSV file?"}}]}}'

  curl -s {url}/v1/query -H 'content-type: application/json' -d '{{"query": "How do I read a CSV file?"}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="none"); \\
print(c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "How do I read a CSV file?"}}]).choices[0].message.content)'

  rayrag query "How do I read a CSV file?"
"""


def ask(url: str, question: str, index: str, mode: str | None, top_k: int | None, as_json: bool) -> None:
    body = {"query": question, "index": index, "mode": mode, "top_k": top_k}
    try:
        response = httpx.post(f"{url}/v1/query", json={k: v for k, v in body.items() if v is not None}, timeout=300)
    except httpx.HTTPError as exc:
        raise ServeStartError(f"cannot reach {url}: {exc!r} (is `rayrag serve` running?)") from None
    payload = response.json()
    if response.status_code != 200:
        raise ServeStartError(f"{response.status_code}: {payload.get('error', {}).get('message', payload)}")
    if as_json:
        typer.echo(json.dumps(payload, indent=1))
        return
    typer.echo(payload["answer"].strip() + "\n")
    for c in payload["citations"]:
        where = f" p.{c['page']}" if c["page"] else ""
        typer.echo(f"  [{c['n']}] {c['source']}{where} — {c['section'] or c['title'] or ''} (score {c['score']:.3f})")
    typer.echo(f"\n({payload['backend']} · {payload['model']} · index {payload['index']}@{payload['version']})")
