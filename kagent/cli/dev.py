"""`kagent dev`: Kagent on a real local control plane, with live agents, no cluster needed.

``up`` starts, each detached from the terminal so they outlive the command:
the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), Kagent's CRDs,
the controller with its admission webhook, the local pod realiser (agent pods become
``kagent runtime`` processes; one proxy plays their Services) and, with ``--mock-llm``, the
scripted model every agent talks to. ``down`` stops all of it. Only how pods are realised differs
from a cluster: the controller and the workflow engine run their normal code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from kagent.api.crd import all_crds, render_yaml
from kagent.testing.controller import ControllerProcess
from kagent.testing.controlplane import ControlPlane, ControlPlaneError
from kagent.testing.services import free_port

app = typer.Typer(help="Run Kagent locally on a real control plane.", no_args_is_help=True)
console = Console(stderr=True)

KubeconfigOption = typer.Option(
    None, "--kubeconfig",
    help="Where to write the kubeconfig (default: $KAGENT_DEV_HOME/kubeconfig, "
         "~/.kagent/dev/kubeconfig).")
STATE_FILE = "dev.json"


def dev_home() -> Path:
    return Path(os.environ.get("KAGENT_DEV_HOME") or Path.home() / ".kagent" / "dev")


def dev_paths(kubeconfig: Path | None) -> tuple[Path, Path]:
    """(kubeconfig, workdir) — the workdir sits beside the kubeconfig so `down` finds it."""
    target = (kubeconfig or dev_home() / "kubeconfig").expanduser().absolute()
    return target, target.parent / f".{target.name}.kagent-dev"


def install_crds(plane: ControlPlane) -> None:
    manifests = "---\n".join(render_yaml(m) for m in all_crds().values())
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifests)
    names = [f"crd/{m['metadata']['name']}" for m in all_crds().values()]
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


# --- the processes beside the control plane ------------------------------------------------------


@dataclass(frozen=True)
class DevProcess:
    """A detached process of the dev environment (its own process group)."""

    pid: int
    log: str
    url: str = ""


def read_state(workdir: Path) -> dict[str, DevProcess]:
    try:
        raw = json.loads((workdir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {name: DevProcess(**entry) for name, entry in raw.get("processes", {}).items()}


def _write_state(workdir: Path, processes: Mapping[str, DevProcess]) -> None:
    (workdir / STATE_FILE).write_text(json.dumps(
        {"processes": {name: asdict(p) for name, p in processes.items()}}, indent=2))


def _live_realiser(kubeconfig: Path | None) -> tuple[Path, DevProcess] | None:
    """(workdir, pod realiser) of the dev environment ``kubeconfig`` (else $KUBECONFIG) belongs
    to, while its realiser runs; None for any other cluster."""
    from kagent.cli.common import kubeconfig_path

    path = kubeconfig_path(kubeconfig or (Path(os.environ["KUBECONFIG"])
                                          if os.environ.get("KUBECONFIG") else None))
    if path is None:
        return None
    _, workdir = dev_paths(path)
    pods = read_state(workdir).get("pods")
    return (workdir, pods) if pods is not None and _alive(pods.pid) else None


def local_agents_url(kubeconfig: Path | None) -> str | None:
    """The local proxy that plays the agents' Services, when ``kubeconfig`` is a running dev
    environment's (so `kagent chat` reaches agents there without the API server's proxy)."""
    found = _live_realiser(kubeconfig)
    return found[1].url if found else None


def local_pod_log(kubeconfig: Path | None, namespace: str, pod: str) -> Path | None:
    """The log file of a pod realised by a running dev environment (kwok's node has no
    kubelet to serve logs; the realiser keeps each process's output)."""
    found = _live_realiser(kubeconfig)
    if found is None:
        return None
    log = found[0] / "pods" / namespace / pod / "agent.log"
    return log if log.is_file() else None


def _start_detached(workdir: Path, name: str, what: str, argv: list[str], port: int,
                    health_path: str) -> DevProcess:
    """Start ``argv`` in its own session (it outlives this command), logging to
    ``<workdir>/<name>.log``, and wait until ``health_path`` answers on ``port``."""
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + health_path, process, what, log)
    return DevProcess(pid=process.pid, log=str(log), url=url)


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path,
               timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def scripted_model_env(url: str) -> dict[str, str]:
    """Point every provider SDK at the scripted model through its standard base-URL variable
    (``endpoint`` in an Agent still wins, as it would against the real provider)."""
    return {
        "OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_BASE_URL": url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "scripted"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "scripted"),
    }


def start_mock_llm(workdir: Path, scripts: list[Path]) -> DevProcess:
    port = free_port()
    argv = [sys.executable, "-m", "kagent", "mock-llm", "--port", str(port)]
    for script in scripts:
        argv += ["--script", str(script.absolute())]
    return _start_detached(workdir, "mock-llm", "the scripted model", argv, port, "/_mock/health")


def start_local_pods(workdir: Path, kubeconfig: Path, overrides: Mapping[str, str]) -> DevProcess:
    port = free_port()
    argv = [sys.executable, "-m", "kagent", "dev", "pods", "--kubeconfig", str(kubeconfig),
            "--workdir", str(workdir), "--port", str(port)]
    for key, value in overrides.items():
        argv += ["--env", f"{key}={value}"]
    return _start_detached(workdir, "pods", "the local pod realiser", argv, port, "/_pods")


def start_controller(plane: ControlPlane, workdir: Path, agents_url: str) -> DevProcess:
    controller = ControllerProcess(
        plane, identity="kagent-dev", log_dir=workdir, lease_seconds=15,
        env={"KAGENT_WORKFLOW_AGENT_URL_TEMPLATE": agents_url + "/{namespace}/{name}"},
    ).start()
    assert controller.process is not None
    return DevProcess(pid=controller.process.pid, log=str(controller.log_file),
                      url=f"http://127.0.0.1:{controller.metrics_port}/metrics")


def stop_processes(workdir: Path) -> list[str]:
    """Stop every dev process (newest first), then forget them; returns their names."""
    processes = read_state(workdir)
    for name in reversed(list(processes)):
        _stop_group(processes[name].pid)
    (workdir / STATE_FILE).unlink(missing_ok=True)
    return list(processes)


def _stop_group(pid: int) -> None:
    """SIGTERM the process group, SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if not _group_alive(pid):
            return


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the group."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _attached(workdir: Path) -> ControlPlane | None:
    try:
        return ControlPlane.attach(workdir)
    except ControlPlaneError:
        return None


# --- commands ---------------------------------------------------------------------------------


@dataclass
class DevEnvironment:
    kubeconfig: Path
    workdir: Path
    processes: dict[str, DevProcess]


def bring_up(kubeconfig: Path | None, *, crds_only: bool = False,
             mock_llm: list[Path] | None = None,
             progress: Callable[[str], object] | None = None) -> DevEnvironment:
    """Start the dev environment (or return the running one); raises RuntimeError on failure,
    having stopped whatever it had started."""
    say = progress or (lambda _: None)
    target, workdir = dev_paths(kubeconfig)
    existing = _attached(workdir)
    if existing is not None and existing.is_running():
        return DevEnvironment(target, workdir, read_state(workdir))
    plane = ControlPlane(workdir=workdir, detached=True, local_agent_pods=not crds_only)
    processes: dict[str, DevProcess] = {}
    try:
        say("starting etcd, kube-apiserver, controller-manager, scheduler and kwok…")
        plane.start()
        say("installing Kagent's CRDs…")
        install_crds(plane)
        if not crds_only:
            overrides: dict[str, str] = {}
            if mock_llm:
                say("starting the scripted model…")
                processes["mock-llm"] = start_mock_llm(workdir, mock_llm)
                _write_state(workdir, processes)
                overrides = scripted_model_env(processes["mock-llm"].url)
            say("starting the local pod realiser…")
            processes["pods"] = start_local_pods(workdir, plane.kubeconfig, overrides)
            _write_state(workdir, processes)
            say("starting the controller and admission webhook…")
            processes["controller"] = start_controller(plane, workdir, processes["pods"].url)
            _write_state(workdir, processes)
    except (ControlPlaneError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:
        stop_processes(workdir)
        plane.stop()
        detail = getattr(error, "stderr", None) or error
        raise RuntimeError(str(detail)) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(plane.kubeconfig.read_bytes())
    target.chmod(0o600)
    return DevEnvironment(target, workdir, processes)


MockLlmOption = typer.Option(
    None, "--mock-llm",
    help="Run the scripted model with this script (repeat to merge) and point every agent's "
         "provider at it: no API key, no network.")


@app.command("up")
def up(
    kubeconfig: Path = KubeconfigOption,
    crds_only: bool = typer.Option(False, "--crds-only", help="Install only the API (no controller)."),
    mock_llm: list[Path] = MockLlmOption,
) -> None:
    """Start a local control plane with Kagent: CRDs, controller, webhook and live agents."""
    target, workdir = dev_paths(kubeconfig)
    existing = _attached(workdir)
    if existing is not None and existing.is_running():
        console.print(f"[yellow]already running[/] (kubeconfig: {target})")
        raise typer.Exit(0)
    for script in mock_llm or []:
        if not script.is_file():
            console.print(f"[red]--mock-llm {script}: no such file[/]")
            raise typer.Exit(2)
    began = time.monotonic()
    with console.status("starting…") as status:
        try:
            env = bring_up(kubeconfig, crds_only=crds_only, mock_llm=mock_llm,
                           progress=status.update)
        except RuntimeError as error:
            console.print(f"[red]kagent dev up failed:[/] {error}")
            raise typer.Exit(1) from None
    console.print(f"[green]ready[/] in {time.monotonic() - began:.1f}s")
    typer.echo(f"export KUBECONFIG={env.kubeconfig}")
    _print_processes(env.processes)
    console.print("then:  kubectl get kagent -A      stop:  kagent dev down"
                  + (f" --kubeconfig {target}" if kubeconfig else ""))


def _print_processes(processes: Mapping[str, DevProcess]) -> None:
    labels = {"mock-llm": "scripted model", "pods": "agents (local Services)",
              "controller": "controller metrics"}
    for name, process in processes.items():
        suffix = "/<namespace>/<agent>/" if name == "pods" else ""
        console.print(f"  {labels.get(name, name):<24} {process.url}{suffix}   log {process.log}",
                      highlight=False)


@app.command("down")
def down(kubeconfig: Path = KubeconfigOption) -> None:
    """Stop everything `kagent dev up` started."""
    target, workdir = dev_paths(kubeconfig)
    stopped = stop_processes(workdir)
    if not ControlPlane.stop_detached(workdir) and not stopped:
        console.print(f"nothing is running for {target}")
        raise typer.Exit(0)
    target.unlink(missing_ok=True)
    console.print("[green]stopped[/]")


@app.command("status")
def status(kubeconfig: Path = KubeconfigOption) -> None:
    """Say whether the local environment is running. Exit code 0 if it is, 3 if not."""
    target, workdir = dev_paths(kubeconfig)
    plane = _attached(workdir)
    if plane is None or not plane.is_running():
        console.print("not running")
        raise typer.Exit(3)
    console.print(f"running — kubeconfig {target}")
    processes = read_state(workdir)
    _print_processes(processes)
    pods = processes.get("pods")
    if pods is not None and _alive(pods.pid):
        try:
            listed = httpx.get(f"{pods.url}/_pods", timeout=5, trust_env=False).json()["pods"]
        except (httpx.HTTPError, ValueError, KeyError):
            listed = []
        for pod in listed:
            state = "ready" if pod["ready"] else (pod.get("problem") or "starting")
            console.print(f"  pod {pod['namespace']}/{pod['pod']:<40} {state}", highlight=False)


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

    from kagent.testing.localpods import serve_local_pods

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    malformed = [item for item in env or [] if "=" not in item]
    if malformed:
        console.print(f"[red]--env {malformed[0]!r}: write it as KEY=VALUE[/]")
        raise typer.Exit(2)
    overrides = dict(item.split("=", 1) for item in env or [])
    try:
        asyncio.run(serve_local_pods(kubeconfig, workdir, port, overrides))
    except KeyboardInterrupt:
        pass


# --- the demo ------------------------------------------------------------------------------------

DEMO_NAMESPACE = "ai-agents"
DEMO_EXAMPLES = ("research-report/agents.yaml", "research-report/workflow.yaml",
                 "inquiry-routing/agents.yaml", "inquiry-routing/workflow.yaml",
                 "review-revise/agents.yaml", "review-revise/workflow.yaml")
DEMO_PROVIDERS = {
    # key variable: (provider, model, Secret name)
    "OPENAI_API_KEY": ("openai", None, "openai-api-key"),
    "ANTHROPIC_API_KEY": ("anthropic", "claude-haiku-4-5", "anthropic-api-key"),
}


def demo_provider(environ: Mapping[str, str]) -> tuple[str, str | None, str, str] | None:
    """(provider, model or None to keep the example's, Secret, key) for the first provider key
    in the environment; None means the scripted model."""
    for variable, (provider, model, secret) in DEMO_PROVIDERS.items():
        if environ.get(variable):
            return provider, model, secret, environ[variable]
    return None


def demo_documents(examples: Path, provider: tuple[str, str | None, str, str] | None
                   ) -> list[dict[str, Any]]:
    """The examples the demo applies, their agents switched to ``provider`` when one is given."""
    import yaml

    documents: list[dict[str, Any]] = []
    for relative in DEMO_EXAMPLES:
        path = examples / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (run the demo from the repository root, or "
                                    "give --examples)")
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if provider is not None:
        name, model, secret, _ = provider
        for doc in documents:
            if doc["kind"] == "Agent":
                spec_model = doc["spec"]["model"]
                spec_model.update({"provider": name,
                                   "apiKeySecretRef": {"name": secret, "key": "api-key"}})
                if model:
                    spec_model["name"] = model
    return documents


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
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    target, workdir = dev_paths(kubeconfig)
    console.rule("[bold]Kagent demo")
    console.print("model: " + (f"{provider[0]} (your key)" if provider else
                               "the scripted model (offline; set OPENAI_API_KEY for a real one)"))
    began = time.monotonic()
    with console.status("starting…") as status:
        try:
            env = bring_up(kubeconfig, mock_llm=scripts, progress=status.update)
        except RuntimeError as error:
            console.print(f"[red]the local cluster did not start:[/] {error}")
            raise typer.Exit(1) from None
        if "pods" not in env.processes:
            console.print("[red]a dev environment without live agents is already running[/]; "
                          "stop it with `make demo-down` and try again")
            raise typer.Exit(1)
        if not provider and "mock-llm" not in env.processes:
            console.print("[red]the running dev environment has no scripted model and no provider "
                          "key is set[/]; stop it with `make demo-down` and try again")
            raise typer.Exit(1)
        console.print(f"[green]✓[/] local cluster with Kagent's controller and webhook "
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
        console.print(f"[green]✓[/] applied {len(documents)} resources from {examples}/ "
                      f"({len(agents)} agents, {sum(d['kind'] == 'Workflow' for d in documents)} "
                      "workflows)")
        kube = client(target)
        deadline = time.monotonic() + 300
        waiting = agents
        while waiting:
            status.update(f"waiting for {len(waiting)} agents to be Ready: {', '.join(waiting)}")
            waiting = [a for a in agents if not _agent_ready(kube, a)]
            if time.monotonic() > deadline:
                console.print(f"[red]agents not Ready after 5 minutes:[/] {', '.join(waiting)}; "
                              f"see `kagent describe agent {waiting[0]} -n {DEMO_NAMESPACE}` and "
                              f"{workdir}/pods.log")
                raise typer.Exit(1)
            if waiting:
                time.sleep(1)
    console.print(f"[green]✓[/] {len(agents)} agents Ready, each a local `kagent runtime` process")
    console.print("\n[bold]Running the research-report workflow[/] "
                  "(researcher → two analysts in parallel → writer)\n")
    exit_code = 0
    try:
        workflow_cli.run(workflow_name="research-report", inputs=[f"topic={topic}"], name=None,
                         watch=True, timeout=timeout, namespace=DEMO_NAMESPACE, kubeconfig=target)
    except typer.Exit as done:
        exit_code = done.exit_code
    export = f"export KUBECONFIG={target}"
    console.print(f"""
[bold]Explore[/]
  {export}
  kubectl get kagent -n {DEMO_NAMESPACE}                  every Kagent object
  kagent get runs -n {DEMO_NAMESPACE}                     workflow runs and their phases
  kagent chat writer -n {DEMO_NAMESPACE}                  talk to an agent
  kagent workflow run inquiry-routing -n {DEMO_NAMESPACE} --input question="I was charged twice" --watch
  kagent workflow run review-revise -n {DEMO_NAMESPACE} --input brief="Kagent 1.0" --watch
  kagent dev status                                    what runs where
  make demo-down                                       stop everything""", highlight=False)
    raise typer.Exit(exit_code)


def _agent_ready(kube: Any, name: str) -> bool:
    from kagent.cli.common import kagent_resource

    try:
        doc = kube.get(kagent_resource("Agent"), name, namespace=DEMO_NAMESPACE).to_dict()
    except Exception:  # noqa: BLE001 — not there yet
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (doc.get("status") or {}).get("conditions") or [])
