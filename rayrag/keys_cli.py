"""`rayrag keys create|list|revoke`: manage the gateway's API keys in the configured key store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rayrag.options import DEFAULT_CONFIG, ConfigOption, load_settings
from serving.stores.keys import ANY, KeyLimits, KeyStore

keys_app = typer.Typer(help="Create, list and revoke API keys (stored hashed; the key is shown once).")


def _store(config: Path) -> KeyStore:
    settings = load_settings(config or DEFAULT_CONFIG)
    return KeyStore(settings.serve.gateway.auth.store)


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="Tenant that owns the key.")],
    index: Annotated[list[str] | None, typer.Option(help="Index the key may use (repeat; default: all).")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Generator model the key may use (repeat; default: all).")
    ] = None,
    ingest: Annotated[
        list[str] | None,
        typer.Option(help="Index the key may upload documents to and re-index (repeat; default: none)."),
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: the config's).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (default: the config's).")] = None,
    budget: Annotated[int | None, typer.Option(help="Credit budget in tokens (default: the config's).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Issue a key; print it once."""
    limits = KeyLimits(requests_per_minute=rpm, tokens_per_minute=tpm, credit_budget=budget)
    key, principal = _store(config).create(tenant, index or [ANY], model or [ANY], limits, ingest)
    typer.echo(key)
    typer.echo(
        f"key id {principal.key_id} for tenant {tenant!r}: indexes {principal.indexes}, models {principal.models}, "
        f"ingest {principal.ingest}",
        err=True,
    )


@keys_app.command("list")
def list_keys(config: ConfigOption = DEFAULT_CONFIG, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Keys (ids, tenants, scopes, limits, revocation); never the secrets."""
    principals = _store(config).list()
    if as_json:
        typer.echo(json.dumps([p.model_dump() for p in principals], indent=1))
        return
    for p in principals:
        state = "revoked" if p.revoked else "active"
        typer.echo(
            f"{p.key_id}  {p.tenant:<16} {state:<8} indexes={','.join(p.indexes)} models={','.join(p.models)}"
            f" ingest={','.join(p.ingest) or '-'}"
        )


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id shown by `create`/`list`.")],
           config: ConfigOption = DEFAULT_CONFIG) -> None:  # fmt: skip
    """Revoke a key at once (the next request with it gets 401)."""
    if not _store(config).revoke(key_id):
        raise typer.BadParameter(f"no active key {key_id!r}")
    typer.echo(f"revoked {key_id}")
