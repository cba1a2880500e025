"""`kagent dev`: Kagent on a real local control plane, with live agents, no cluster needed.

``up`` starts, each detached from the terminal so they outlive the command:
the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), Kagent's CRDs,
the controller with its admission webhook, the local pod realiser (agent pods become
``kagent runtime`` processes; one proxy plays their Services) and, with ``--mock-llm``, the
scripted model every agent talks to. ``down`` stops all of it. Only how pods are realised differs
from a cluster: the controller and the workflow engine run their normal code. The environment
itself lives in :mod:`kagent.local.dev`; this module is its command line.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from kagent.api.labels import CONTROLLER_NAMESPACE
from kagent.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, console, err_console, fail
from kagent.local.controlplane import ControlPlane
from kagent.local.dev import (
    DEMO_NAMESPACE,
    DevProcess,
    attached,
    bring_up,
    demo_documents,
    demo_provider,
    dev_paths,
    read_state,
    stop_processes,
)

app = typer.Typer(help="Run Kagent locally on a real control plane.", no_args_is_help=True)
# Reports (the export line, status, "stopped") go to stdout; progress and hints to stderr.

KubeconfigOption = typer.Option(
    None, "--kubeconfig",
    help="Where to write the kubeconfig (default: $KAGENT_DEV_HOME/kubeconfig, "
         "~/.kagent/dev/kubeconfig).")


MockLlmOption = typer.Option(
    None, "--mock-llm",
    help="Run the scripted model with this script (repeat to merge) and point every agent's "
         "provider at it: no API key, no network.")


RealNodesOption = typer.Option(
    False, "--real-nodes",
    help="Run pods for real on this machine (root): a kubelet, containerd and kube-proxy join the "
         "control plane, the chart's controller and every agent run as pods of the Kagent image. "
         "Changes the host while it runs: see docs/development.md, 'Real nodes'.")
ImageArchiveOption = typer.Option(
    None, "--image-archive",
    help="The Kagent image for --real-nodes (default: dist/kagent-<version>.oci.tar, `make image`).")


@app.command("up")
def up(
    kubeconfig: Path = KubeconfigOption,
    crds_only: bool = typer.Option(False, "--crds-only", help="Install only the API (no controller)."),
    mock_llm: list[Path] = MockLlmOption,
    real_nodes: bool = RealNodesOption,
    image_archive: Path = ImageArchiveOption,
) -> None:
    """Start a local control plane with Kagent: CRDs, controller, webhook and live agents."""
    target, workdir = dev_paths(kubeconfig)
    for script in mock_llm or []:
        if not script.is_file():
            fail(f"--mock-llm {script}: no such file", code=EXIT_USAGE)
    existing = attached(workdir)
    if existing is not None and existing.is_running():
        err_console.print(f"[yellow]already running[/] (kubeconfig: {target})")
        if mock_llm:
            _apply_scripts(workdir, mock_llm)
        typer.echo(f"export KUBECONFIG={target}")  # stdout stays eval-able: `eval $(kagent dev up)`
        raise typer.Exit(0)
    if real_nodes:
        if crds_only or mock_llm:
            fail("--real-nodes runs the chart's controller as pods: it takes neither --crds-only "
                 "nor --mock-llm", "run `kagent mock-llm` as a pod instead", EXIT_USAGE)
        _up_with_real_nodes(target, workdir, image_archive)
        return
    began = time.monotonic()
    with err_console.status("starting…") as status:
        try:
            env = bring_up(kubeconfig, crds_only=crds_only, mock_llm=mock_llm,
                           progress=status.update)
        except RuntimeError as error:
            fail(f"kagent dev up failed: {error}")
    err_console.print(f"[green]ready[/] in {time.monotonic() - began:.1f}s")
    typer.echo(f"export KUBECONFIG={env.kubeconfig}")
    _print_processes(env.processes, err_console)
    err_console.print("then:  kubectl get kagent -A      stop:  kagent dev down"
                      + (f" --kubeconfig {target}" if kubeconfig else ""))


def _apply_scripts(workdir: Path, scripts: list[Path]) -> None:
    """``--mock-llm`` given to a running environment: its scripted model takes the scripts now
    (they replace its script); an environment started without one refuses, never ignores them."""
    from kagent.mockllm.script import ScriptError, load_script, merge_scripts

    try:
        merged = merge_scripts([load_script(path) for path in scripts])
    except ScriptError as error:
        fail(str(error), code=EXIT_USAGE)
    process = read_state(workdir).get("mock-llm")
    if process is None or not process.alive():
        fail("--mock-llm: the running environment was started without a scripted model, so its "
             "agents cannot be pointed at one now",
             "stop it with `kagent dev down` and start it again with --mock-llm", EXIT_USAGE)
    try:
        answer = httpx.put(f"{process.url}/_mock/script", timeout=10, trust_env=False,
                           json=merged.model_dump(mode="json", exclude_none=True))
    except httpx.HTTPError as error:
        fail(f"--mock-llm: cannot reach the scripted model at {process.url}: {error}",
             f"see its log, {process.log}")
    if answer.status_code != 200:
        fail(f"--mock-llm: the scripted model refused the script: {answer.text[:500]}",
             code=EXIT_USAGE)
    err_console.print(f"applied {', '.join(str(p) for p in scripts)} to its scripted model "
                      f"({len(merged.rules)} rules; they replace the ones it had)", highlight=False)


def _print_processes(processes: Mapping[str, DevProcess], where: Console) -> None:
    labels = {"mock-llm": "scripted model", "pods": "agents (local Services)",
              "controller": "controller metrics"}
    for name, process in processes.items():
        suffix = "/<namespace>/<agent>/" if name == "pods" else ""
        where.print(f"  {labels.get(name, name):<24} {process.url}{suffix}   log {process.log}",
                    highlight=False, soft_wrap=True)


def _up_with_real_nodes(target: Path, workdir: Path, image_archive: Path | None) -> None:
    from importlib.metadata import version

    from rich.markup import escape

    from kagent.cli.install import install
    from kagent.local import nodeconfig, oci, realnode

    archive = image_archive or Path("dist") / f"kagent-{version('kagent')}.oci.tar"
    if not archive.is_file():
        fail(f"no image archive at {escape(str(archive))}",
             "build it with `make image`, or give --image-archive", EXIT_USAGE)
    began = time.monotonic()
    try:
        reference = oci.read_archive(archive).reference
        with err_console.status("starting the control plane and a real node (kubelet, "
                                "containerd, kube-proxy, CoreDNS)…"):
            plane, _ = realnode.start_detached(workdir, [archive.absolute()])
    except (RuntimeError, ValueError) as error:
        fail(f"kagent dev up --real-nodes failed: {escape(str(error))}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(plane.kubeconfig.read_bytes())
    target.chmod(0o600)
    repository, tag = reference.rsplit(":", 1)
    try:
        install(kubeconfig=target, namespace=CONTROLLER_NAMESPACE, cert_manager=False, chart=None,
                wait=True, check_only=False,
                values=[f"image.repository={repository}", f"image.tag={tag}",
                        "image.pullPolicy=Never"])
    except typer.Exit:
        realnode.stop_detached(workdir)
        plane.stop()
        target.unlink(missing_ok=True)
        raise
    err_console.print(f"[green]ready[/] in {time.monotonic() - began:.1f}s: the controller and "
                      f"every agent run as pods of {reference} on node {nodeconfig.NODE_NAME}")
    typer.echo(f"export KUBECONFIG={target}")
    err_console.print("then:  kubectl get pods -A      stop:  kagent dev down")


@app.command("down")
def down(kubeconfig: Path = KubeconfigOption) -> None:
    """Stop everything `kagent dev up` started."""
    target, workdir = dev_paths(kubeconfig)
    from kagent.local.realnode import stop_detached as stop_real_node

    stop_real_node(workdir)  # first: it drains its pods through the API server
    stopped = stop_processes(workdir)
    if not ControlPlane.stop_detached(workdir) and not stopped:
        console.print(f"nothing is running for {target}", highlight=False, soft_wrap=True)
        raise typer.Exit(0)
    target.unlink(missing_ok=True)
    console.print("[green]stopped[/]")


@app.command("status")
def status(kubeconfig: Path = KubeconfigOption) -> None:
    """Say whether the local environment is running (on stdout). Exit code 0 if it is, 3 if
    not."""
    target, workdir = dev_paths(kubeconfig)
    plane = attached(workdir)
    if plane is None or not plane.is_running():
        console.print("not running")
        raise typer.Exit(EXIT_NOT_FOUND)
    console.print(f"running — kubeconfig {target}", highlight=False, soft_wrap=True)
    processes = read_state(workdir)
    _print_processes(processes, console)
    pods = processes.get("pods")
    if pods is not None and pods.alive():
        try:
            listed = httpx.get(f"{pods.url}/_pods", timeout=5, trust_env=False).json()["pods"]
        except (httpx.HTTPError, ValueError, KeyError):
            listed = []
        for pod in listed:
            state = "ready" if pod["ready"] else (pod.get("problem") or "starting")
            console.print(f"  pod {pod['namespace']}/{pod['pod']:<40} {state}", highlight=False,
                          soft_wrap=True)


@app.command("pods", hidden=True)
def pods(
    kubeconfig: Path = typer.Option(..., "--kubeconfig"),
    workdir: Path = typer.Option(..., "--workdir"),
    port: int = typer.Option(..., "--port"),
    env: list[str] = typer.Option(None, "--env", help="KEY=VALUE for every agent process."),
) -> None:
    """Realise agent pods as local processes behind one proxy (started by `kagent dev up`)."""
    import asyncio
    import logging

    from kagent.local.localpods import serve_local_pods

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    malformed = [item for item in env or [] if "=" not in item]
    if malformed:
        fail(f"--env {malformed[0]!r}: write it as KEY=VALUE", code=EXIT_USAGE)
    overrides = dict(item.split("=", 1) for item in env or [])
    try:
        asyncio.run(serve_local_pods(kubeconfig, workdir, port, overrides))
    except KeyboardInterrupt:
        pass


# --- the demo ------------------------------------------------------------------------------------

@app.command("demo")
def demo(
    kubeconfig: Path = KubeconfigOption,
    examples: Path = typer.Option(Path("examples"), "--examples", help="The examples folder."),
    topic: str = typer.Option("AI agents on Kubernetes", "--topic", help="What to research."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait for the run."),
) -> None:
    """The whole system in one command: a local cluster with Kagent, the example agents and
    workflows, and a live run of the research-report workflow. Offline unless a provider key
    (OPENAI_API_KEY or ANTHROPIC_API_KEY) is set."""
    import yaml

    from kagent.cli import workflow as workflow_cli
    from kagent.cli.common import client

    provider = demo_provider(os.environ)
    scripts = [] if provider else sorted(examples.glob("*/mockllm.yaml"))
    try:
        documents = demo_documents(examples, provider)
    except FileNotFoundError as error:
        fail(str(error), code=EXIT_USAGE)
    target, workdir = dev_paths(kubeconfig)
    err_console.rule("[bold]Kagent demo")
    err_console.print("model: " + (f"{provider[0]} (your key)" if provider else
                               "the scripted model (offline; set OPENAI_API_KEY for a real one)"))
    began = time.monotonic()
    with err_console.status("starting…") as status:
        try:
            env = bring_up(kubeconfig, mock_llm=scripts, progress=status.update)
        except RuntimeError as error:
            fail(f"the local cluster did not start: {error}")
        if "pods" not in env.processes:
            fail("a dev environment without live agents is already running",
                 "stop it with `make demo-down` and try again")
        if not provider and "mock-llm" not in env.processes:
            fail("the running dev environment has no scripted model and no provider key is set",
                 "stop it with `make demo-down` and try again")
        err_console.print(f"[green]✓[/] local cluster with Kagent's controller and webhook "
                          f"({time.monotonic() - began:.0f}s)")
        plane = ControlPlane.attach(workdir)
        status.update("applying the examples…")
        secret_name = provider[2] if provider else "openai-api-key"
        key = provider[3] if provider else "scripted-model-needs-no-key"
        setup = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": secret_name, "namespace": DEMO_NAMESPACE},
             "stringData": {"api-key": key}},
        ]
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(setup))
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
        agents = [str(d["metadata"]["name"]) for d in documents if d["kind"] == "Agent"]
        err_console.print(f"[green]✓[/] applied {len(documents)} resources from {examples}/ "
                          f"({len(agents)} agents, "
                          f"{sum(d['kind'] == 'Workflow' for d in documents)} workflows)")
        kube = client(target)
        deadline = time.monotonic() + 300
        waiting = agents
        while waiting:
            status.update(f"waiting for {len(waiting)} agents to be Ready: {', '.join(waiting)}")
            waiting = [a for a in agents if not _agent_ready(kube, a)]
            if time.monotonic() > deadline:
                fail(f"agents not Ready after 5 minutes: {', '.join(waiting)}",
                     f"see `kagent describe agent {waiting[0]} -n {DEMO_NAMESPACE}` and "
                     f"{workdir}/pods.log")
            if waiting:
                time.sleep(1)
    err_console.print(f"[green]✓[/] {len(agents)} agents Ready, each a local `kagent runtime` "
                      "process")
    err_console.print("\n[bold]Running the research-report workflow[/] "
                      "(researcher → two analysts in parallel → writer)\n")
    exit_code = 0
    try:
        workflow_cli.run(workflow_name="research-report", inputs=[f"topic={topic}"], name=None,
                         watch=True, timeout=timeout, namespace=DEMO_NAMESPACE, kubeconfig=target)
    except typer.Exit as done:
        exit_code = done.exit_code
    err_console.print(explore_hints(target, kagent_on_path()), highlight=False, soft_wrap=True)
    from kagent.dashboard.server import dashboard_for_dev
    console.print(f"  dashboard  {dashboard_for_dev(target, workdir, DEMO_NAMESPACE)}",
                  highlight=False)
    raise typer.Exit(exit_code)


def kagent_on_path() -> Path | None:
    """The folder holding this ``kagent`` when a shell would not find it by name (None when it
    would): a fresh checkout's ``kagent`` lives in the project's virtualenv."""
    here = Path(sys.executable).parent
    found = shutil.which("kagent")
    if found and Path(found).resolve() == (here / "kagent").resolve():
        return None
    return here


def explore_hints(kubeconfig: Path, missing_from_path: Path | None) -> str:
    """What the demo suggests next, each command ready to paste (pure)."""
    ns = DEMO_NAMESPACE
    path = (f"  export PATH=\"{missing_from_path}:$PATH\"   put kagent on your PATH (or type "
            f"{missing_from_path}/kagent)\n" if missing_from_path else "")
    return f"""
[bold]Explore[/]
{path}  export KUBECONFIG={kubeconfig}
  kubectl get kagent -n {ns}                  every Kagent object
  kagent get runs -n {ns}                     workflow runs and their phases
  kagent chat writer -n {ns}                  talk to an agent
  kagent workflow run inquiry-routing -n {ns} --input question="I was charged twice" --watch
  kagent workflow run review-revise -n {ns} --input brief="Kagent 1.0" --watch
  kagent dev status                                    what runs where
  make demo-down                                       stop everything"""


def _agent_ready(kube: Any, name: str) -> bool:
    from kagent.cli.common import kagent_resource

    try:
        doc = kube.get(kagent_resource("Agent"), name, namespace=DEMO_NAMESPACE).to_dict()
    except Exception:  # noqa: BLE001 — not there yet
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (doc.get("status") or {}).get("conditions") or [])
