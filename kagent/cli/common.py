"""What every user command shares: the cluster options, exit codes, output formats, errors.

Exit codes are part of the interface, so scripts can branch on them:
0 ok, 1 error (cluster unreachable, request failed), 2 usage (bad arguments), 3 not found.

So are the streams: a command's report — what it was asked for (a table, a description, an
answer, a status, what it created or changed) — goes to stdout; progress, hints, warnings and
errors go to stderr, so `kagent … | grep` and `x=$(kagent …)` see only the report.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

def _report_width() -> int | None:
    """The report's width: a terminal's own (or $COLUMNS); unlimited into a pipe or a file, so a
    table row or a long line reaches ``grep`` whole, as kubectl's do (rich would use 80)."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return 1_000_000


console = Console(width=_report_width())
"""stdout: the report."""
err_console = Console(stderr=True, soft_wrap=True)
"""stderr: progress, hints, warnings, errors (never wrapped by us: a message or a command in a
hint stays on one line, for copying and grep; a terminal wraps what is too long itself)."""


class Output(str, Enum):
    table = "table"
    wide = "wide"
    name = "name"
    yaml = "yaml"
    json = "json"


NamespaceOption = typer.Option(
    None, "--namespace", "-n",
    help="Namespace (default: the kubeconfig context's namespace, else 'default').",
)
KubeconfigOption = typer.Option(
    None, "--kubeconfig", envvar="KUBECONFIG",
    help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
)
OutputOption = typer.Option(
    Output.table, "--output", "-o",
    help="table (default), wide (more columns), name (kind.group/NAME per line), yaml or json.")
ShowManagedFieldsOption = typer.Option(
    False, "--show-managed-fields",
    help="Keep metadata.managedFields in yaml/json output (left out by default, as kubectl does).")


def fail(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> NoReturn:
    """Print an error (and what to do about it) on stderr and exit with ``code``."""
    # soft_wrap: a message or a command in a hint is never broken across lines (copy, grep).
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"  {hint}", highlight=False, style="dim", soft_wrap=True)
    raise typer.Exit(code)


def kubeconfig_path(kubeconfig: Path | None) -> Path | None:
    """The kubeconfig to use; KUBECONFIG may list several files — the first existing one wins."""
    if kubeconfig is not None:
        return Path(str(kubeconfig).split(os.pathsep)[0]).expanduser()
    return None


def load_config(kubeconfig: Path | None) -> Any:
    """The selected lightkube ``SingleConfig`` of the kubeconfig (or in-cluster config)."""
    from lightkube import KubeConfig
    from lightkube.core.exceptions import ConfigError

    path = kubeconfig_path(kubeconfig)
    try:
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        return config.get()
    except (ConfigError, OSError) as error:
        where = str(path) if path else "$KUBECONFIG / ~/.kube/config"
        fail(f"cannot load a kubeconfig from {where}: {error}",
             "point --kubeconfig (or KUBECONFIG) at a valid kubeconfig; for `make demo` or "
             "`kagent dev up`: export KUBECONFIG=~/.kagent/dev/kubeconfig (`kagent dev status` "
             "shows it)")


def resolve_namespace(namespace: str | None, kubeconfig: Path | None) -> str:
    if namespace:
        return namespace
    return load_config(kubeconfig).namespace


def client(kubeconfig: Path | None) -> Any:
    """A synchronous lightkube client for the CLI (no proxies from the environment: the API
    server is reached directly, as kubectl does by default for local clusters)."""
    from lightkube import Client

    from kagent.api.labels import CLI_FIELD_MANAGER

    return Client(config=load_config(kubeconfig), field_manager=CLI_FIELD_MANAGER,
                  trust_env=False)


def kagent_resource(kind: str) -> Any:
    """The lightkube resource class of a Kagent kind (imported late: the CLI starts fast)."""
    from kagent.kube import KAGENT_RESOURCES

    return KAGENT_RESOURCES[kind]


def api_failure(error: Exception, what: str, kind: str | None = None,
                namespace: str | None = None) -> NoReturn:
    """Turn a Kubernetes API error or a connection error into a message and an exit code;
    with the ``kind`` and ``namespace`` looked in, a 404's hint is the command listing them."""
    import httpx
    import httpx2
    from lightkube.core.exceptions import ApiError

    if isinstance(error, ApiError):
        code = error.status.code
        if code == 404:
            from kagent.api import KINDS

            plural = next((k.plural for k in KINDS if k.kind_name == kind), "KIND")
            listing = f"kagent get {plural} -n {namespace or 'NAMESPACE'}"
            fail(f"{what} not found", f"check the name and namespace (-n), or list them with "
                 f"`{listing}`", EXIT_NOT_FOUND)
        if code in (401, 403):
            fail(f"not allowed to read {what}: {error.status.message}",
                 "check your kubeconfig's user and its RBAC permissions")
        fail(f"{what}: {error.status.message}")
    if isinstance(error, httpx.HTTPError | httpx2.HTTPError | OSError):
        fail(f"cannot reach the Kubernetes API server: {error}",
             "is the cluster running and is --kubeconfig right? (`kagent dev up` starts a local one)")
    raise error


def age(timestamp: Any, now: datetime | None = None) -> str:
    """kubectl-style age: 5s, 3m, 2h, 4d."""
    if not timestamp:
        return "-"
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp)
    seconds = int(((now or datetime.now(UTC)) - timestamp).total_seconds())
    return duration(max(seconds, 0))


def elapsed_seconds(status: dict[str, Any]) -> float | None:
    """Seconds from ``startedAt`` to ``finishedAt`` (or now, while it runs); None before it
    started. Runs and steps share the two fields."""
    started = status.get("startedAt")
    if not started:
        return None
    end = status.get("finishedAt")
    finish = datetime.fromisoformat(str(end)) if end else datetime.now(UTC)
    return (finish - datetime.fromisoformat(str(started))).total_seconds()


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def without_managed_fields(document: dict[str, Any]) -> dict[str, Any]:
    """The object without ``metadata.managedFields``: server-side apply's bookkeeping, long and
    of no use to a reader (kubectl leaves it out unless --show-managed-fields) (pure)."""
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return document
    return {**document, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


def print_documents(documents: list[dict[str, Any]], output: Output, single: bool,
                    show_managed_fields: bool = False) -> None:
    """yaml/json output: one object as itself, several as a kubectl-style List."""
    if not show_managed_fields:
        documents = [without_managed_fields(d) for d in documents]
    body: Any = documents[0] if single and documents else {
        "apiVersion": "v1", "kind": "List", "items": documents,
    }
    if output == Output.json:
        typer.echo(json.dumps(body, indent=2, default=str))
    else:
        typer.echo(yaml.safe_dump(body, sort_keys=False, default_flow_style=False).rstrip())
