"""`kagent install` / `kagent uninstall`: the Helm chart, after checking the cluster is fit."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from kagent.api.labels import CONTROLLER_NAMESPACE
from kagent.cli.common import EXIT_ERROR, EXIT_USAGE, KubeconfigOption, console, err_console, fail

RELEASE = "kagent"
DEFAULT_NAMESPACE = CONTROLLER_NAMESPACE
MIN_MINOR = 28


def default_chart() -> Path:
    return Path(__file__).resolve().parents[2] / "charts" / "kagent"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational
    detail: str


def server_version_ok(version: dict[str, Any]) -> bool:
    """True for Kubernetes ≥ 1.28 (minor may carry a '+', as on managed clusters)."""
    major = int(re.sub(r"\D", "", str(version.get("major", "0"))) or 0)
    minor = int(re.sub(r"\D", "", str(version.get("minor", "0"))) or 0)
    return (major, minor) >= (1, MIN_MINOR)


def prerequisite_checks(kubeconfig: Path | None, cert_manager: bool) -> list[Check]:
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    from kagent.cli.common import client

    checks: list[Check] = []
    import httpx2 as httpx  # what lightkube's kubeconfig auth is built on
    from lightkube.config.client_adapter import ConnectionParams

    from kagent.cli.common import load_config

    config = load_config(kubeconfig)
    try:
        with httpx.Client(**ConnectionParams(trust_env=False).httpx_params(config)) as http:
            response = http.get("/version")
            response.raise_for_status()
            version = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return [Check("cluster reachable", False, f"{config.cluster.server}: {error}")]
    kube = client(kubeconfig)
    checks.append(Check("cluster reachable", True, str(config.cluster.server)))
    checks.append(Check(f"Kubernetes ≥ 1.{MIN_MINOR}", server_version_ok(version),
                        str(version.get("gitVersion", "?"))))

    def crd_present(name: str) -> bool:
        try:
            kube.get(CustomResourceDefinition, name)
            return True
        except Exception:  # noqa: BLE001
            return False

    has_cert_manager = crd_present("certificates.cert-manager.io")
    if cert_manager:
        checks.append(Check("cert-manager present", has_cert_manager,
                            "found" if has_cert_manager else "install cert-manager first, or drop "
                            "--cert-manager to let the controller manage its own TLS"))
    else:
        checks.append(Check("webhook TLS", None, "self-managed by the controller (no cert-manager)"))
    has_keda = crd_present("scaledobjects.keda.sh")
    checks.append(Check("KEDA", None, "present: scaling.keda is available" if has_keda
                        else "absent: Agents using scaling.keda will not be Ready"))
    return checks


def _print_checks(checks: list[Check]) -> None:
    for check in checks:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[blue]i[/]"}[check.ok]
        console.print(f" {mark} {check.name}: {check.detail}", highlight=False)


def _helm(kubeconfig: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    from kagent.local.binaries import helm

    try:
        binary = helm()
    except RuntimeError as error:
        fail(f"helm is not available: {error}", "install helm and put it on PATH")
    command = [str(binary), *args]
    if kubeconfig:
        command += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def install(
    kubeconfig: Path = KubeconfigOption,
    namespace: str = typer.Option(DEFAULT_NAMESPACE, "--namespace", "-n",
                                  help="Namespace of the controller."),
    values: list[str] = typer.Option([], "--set", help="Chart value, key=value (repeatable)."),
    cert_manager: bool = typer.Option(False, "--cert-manager",
                                      help="Issue the webhook certificate with cert-manager."),
    chart: Path = typer.Option(None, "--chart", help="Chart folder (default: charts/kagent)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the controller is up."),
    check_only: bool = typer.Option(False, "--check", help="Only run the prerequisite checks."),
) -> None:
    """Install Kagent (CRDs, controller, webhook) into a cluster with Helm."""
    for value in values:
        if "=" not in value:
            fail(f"--set {value!r} is not key=value", code=EXIT_USAGE)
    chart = chart or default_chart()
    if not (chart / "Chart.yaml").is_file():
        fail(f"no Helm chart at {chart}", "give the chart folder with --chart", EXIT_USAGE)
    console.print("[bold]Checking the cluster[/]")
    checks = prerequisite_checks(kubeconfig, cert_manager)
    _print_checks(checks)
    if any(check.ok is False for check in checks):
        fail("the cluster does not meet the prerequisites above")
    if check_only:
        return
    # Helm installs crds/ on first install only; applying them here makes an upgrade bring
    # the new schema too (server-side apply: fields of other managers are left alone).
    with err_console.status("applying Kagent's CRDs…"):
        applied = apply_crds(kubeconfig, chart / "crds")
    console.print(f"[green]✓[/] {applied} CRDs applied", highlight=False)
    args = ["upgrade", "--install", RELEASE, str(chart), "-n", namespace, "--create-namespace"]
    if cert_manager:
        args += ["--set", "webhook.certManager.enabled=true"]
    for value in values:
        args += ["--set", value]
    if wait:
        args += ["--wait", "--timeout", "300s"]
    with err_console.status(f"helm install {RELEASE} into {namespace}…"):
        result = _helm(kubeconfig, *args)
    if result.returncode != 0:
        fail(f"helm failed: {result.stderr.strip()}", "fix the values or cluster and run again",
             EXIT_ERROR)
    console.print(f"[green]Kagent installed[/] in namespace {namespace}.", highlight=False)
    err_console.print("next: `kagent get agents -A`", style="dim", highlight=False)


def apply_crds(kubeconfig: Path | None, folder: Path) -> int:
    """Server-side apply every CRD in ``folder`` and wait until they are Established."""
    import yaml

    from kagent.cli.common import client
    from kagent.kube.crds import CrdError
    from kagent.kube.crds import apply_crds as apply_crd_manifests

    manifests = [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]
    try:
        return len(apply_crd_manifests(client(kubeconfig), manifests, timeout=120))
    except CrdError as error:
        fail(str(error), "check that you may manage CustomResourceDefinitions (cluster-admin)")


def uninstall(
    kubeconfig: Path = KubeconfigOption,
    namespace: str = typer.Option(DEFAULT_NAMESPACE, "--namespace", "-n",
                                  help="Namespace of the controller."),
) -> None:
    """Uninstall Kagent's Helm release (the CRDs, and so your agents, are kept)."""
    result = _helm(kubeconfig, "uninstall", RELEASE, "-n", namespace)
    if result.returncode != 0:
        not_found = "not found" in result.stderr
        fail(f"helm failed: {result.stderr.strip()}",
             f"is Kagent installed in namespace {namespace}? (`helm list -A`)",
             3 if not_found else EXIT_ERROR)
    console.print(f"Kagent uninstalled from {namespace}.", highlight=False)
