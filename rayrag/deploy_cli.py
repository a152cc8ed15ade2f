"""`rayrag deploy check` and `rayrag deploy rayservice`: cluster deploys checked before they happen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

deploy_app = typer.Typer(help="Check cluster deploy files; render a KubeRay RayService.", no_args_is_help=True)


@deploy_app.command("check")
def check_command(
    serve: Annotated[Path | None, typer.Option("--serve", exists=True, help="`serve deploy` file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", exists=True, help="Root config of the index job.")] = None,
    cluster: Annotated[Path | None, typer.Option("--cluster", exists=True, help="`ray up` cluster YAML.")] = None,
    address: Annotated[str | None, typer.Option(help="Dashboard of a running cluster, e.g. http://head:8265.")] = None,
) -> None:
    """Validate the files (unknown keys are named) and check every stage fits some node before deploying."""
    from rayrag.deploy import check_deploy

    if not any((serve, config, cluster, address)):
        raise typer.BadParameter("give at least one of --serve, --config, --cluster, --address")
    for line in check_deploy(serve, config, cluster, address):
        typer.echo(f"ok  {line}")


@deploy_app.command("rayservice")
def rayservice_command(
    serve: Annotated[Path, typer.Option("--serve", exists=True, help="`serve deploy` file.")] = Path(
        "configs/cluster/serve.yaml"
    ),
    cluster: Annotated[Path, typer.Option("--cluster", exists=True, help="`ray up` cluster YAML.")] = Path(
        "configs/cluster.yaml"
    ),
    image: Annotated[str, typer.Option(help="Container image holding this project at its working directory.")] = (
        "ghcr.io/your-org/rayrag:latest"
    ),
    name: Annotated[str, typer.Option(help="metadata.name of the RayService.")] = "rayrag",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Render a KubeRay RayService from the same Serve file and node types, validated before it is written."""
    from rayrag.deploy import render_rayservice, validate_rayservice

    manifest = render_rayservice(serve, cluster, image, name)
    validate_rayservice(manifest)
    text = yaml.safe_dump(manifest, sort_keys=False)
    if output:
        output.write_text(text)
        typer.echo(f"wrote {output}: kubectl apply -f {output}")
    else:
        typer.echo(text, nl=False)
