"""Entry point of the `kagent` command."""

from __future__ import annotations

from pathlib import Path

import typer

from kagent.api.crd import default_crd_dir, write_crds
from kagent.cli import chat, dev, install, resources, workflow
from kagent.cli.controller import controller_command
from kagent.cli.dashboard import dashboard

app = typer.Typer(
    name="kagent",
    help="Kagent: AI agents, tools, memory and workflows as Kubernetes resources.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(workflow.app, name="workflow")
app.command("controller")(controller_command)
app.command("get")(resources.get)
app.command("describe")(resources.describe)
app.command("logs")(resources.logs)
app.command("invoke")(chat.invoke)
app.command("chat")(chat.chat)
app.command("run")(chat.run)
app.command("install")(install.install)
app.command("uninstall")(install.uninstall)
app.command("dashboard")(dashboard)


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


@app.command("docs")
def docs(
    output: Path = typer.Option(
        None, "--output", "-o", help="Docs folder; writes reference/api.md in it (default: docs/)."
    ),
) -> None:
    """Generate the API reference (Markdown) from the API types."""
    from kagent.api.docs import default_docs_dir, write_api_reference

    typer.echo(f"wrote {write_api_reference(output or default_docs_dir())}")


@app.command("version")
def version() -> None:
    """Print the version of Kagent."""
    from importlib.metadata import version as package_version

    typer.echo(f"kagent {package_version('kagent')}")


@app.command("runtime")
def runtime(
    files: list[Path] = typer.Option(
        ..., "--file", "-f",
        help="Manifests (Agent, Tool, Memory, Secret) or folders of them; repeat -f for more.",
    ),
    port: int = typer.Option(8080, "--port", "-p", help="Port of A2A and /v1/chat/completions."),
    metrics_port: int = typer.Option(
        None, "--metrics-port", help="Separate port for /metrics (default: the main port)."
    ),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
) -> None:
    """Run one agent: A2A, an OpenAI-compatible API, probes and metrics (what an agent pod runs)."""
    from kagent.runtime.server import runtime_command

    runtime_command(files, port, metrics_port, host)


@app.command("mock-llm")
def mock_llm(
    scripts: list[Path] = typer.Option(
        None, "--script", "-s", help="YAML script of scripted answers; repeat to merge several."
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a pod)."),
) -> None:
    """Serve the scripted model: OpenAI, Anthropic and Bedrock wire formats, for offline tests."""
    from kagent.mockllm import ScriptError, serve

    try:
        serve(scripts or None, port=port, host=host)
    except ScriptError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
