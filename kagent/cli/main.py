"""Entry point of the `kagent` command."""

from __future__ import annotations

from pathlib import Path

import typer

from kagent.api.crd import default_crd_dir, write_crds
from kagent.cli import dev

app = typer.Typer(
    name="kagent",
    help="Kagent: AI agents, tools, memory and workflows as Kubernetes resources.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")


@app.command("crds")
def crds(
    output: Path = typer.Option(
        None, "--output", "-o", help="Folder to write the CRDs into (default: the chart's crds/)."
    ),
) -> None:
    """Generate the CustomResourceDefinitions from the API types, one file per kind."""
    directory = output or default_crd_dir()
    for path in write_crds(directory):
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
