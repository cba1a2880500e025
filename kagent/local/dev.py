"""The local environment behind `kagent dev` and `make demo`: a detached control plane, Kagent's
CRDs, the controller with its webhook, the local pod realiser and the scripted model, each a
process of its own that outlives the command that started it. State lives beside the kubeconfig.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kagent.api.labels import LOCAL_PODS_URL_ENV
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane, ControlPlaneError, install_crds
from kagent.local.process import Process, ProcessError
from kagent.local.services import free_port

STATE_FILE = "dev.json"


def first_kubeconfig(kubeconfig: Path | str | None) -> Path | None:
    """The kubeconfig to use; KUBECONFIG may list several files — the first one wins."""
    if kubeconfig is None or str(kubeconfig) == "":
        return None
    return Path(str(kubeconfig).split(os.pathsep)[0]).expanduser()


def dev_home() -> Path:
    return Path(os.environ.get("KAGENT_DEV_HOME") or Path.home() / ".kagent" / "dev")


def dev_paths(kubeconfig: Path | None) -> tuple[Path, Path]:
    """(kubeconfig, workdir) — the workdir sits beside the kubeconfig so `down` finds it."""
    target = (kubeconfig or dev_home() / "kubeconfig").expanduser().absolute()
    return target, target.parent / f".{target.name}.kagent-dev"


# --- the processes beside the control plane ------------------------------------------------------


STOP_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class DevProcess:
    """A detached process of the dev environment (its own process group), as recorded in the
    state file; ``start_ticks`` tells it apart from a later process that reuses its pid."""

    pid: int
    log: str
    url: str = ""
    start_ticks: int | None = None

    def supervised(self) -> Process:
        return Process.attach(self.pid, name=Path(self.log).stem, log_file=Path(self.log),
                              start_ticks=self.start_ticks)

    def alive(self) -> bool:
        """Whether it still runs (a zombie does not)."""
        return self.supervised().alive()


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
    path = first_kubeconfig(kubeconfig or os.environ.get("KUBECONFIG"))
    if path is None:
        return None
    _, workdir = dev_paths(path)
    pods = read_state(workdir).get("pods")
    return (workdir, pods) if pods is not None and pods.alive() else None


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
                    health_path: str, env: Mapping[str, str] | None = None) -> DevProcess:
    """Start ``argv`` in its own session (it outlives this command), logging to
    ``<workdir>/<name>.log``, and wait until ``health_path`` answers on ``port``; stopped again
    if it does not."""
    log = workdir / f"{name}.log"
    process = Process.start(argv, name=what, log_file=log, append_log=True,
                            env={**os.environ, **env} if env else None)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url + health_path, timeout=60.0, what=f"{url}{health_path}")
    except ProcessError:
        process.stop()
        raise
    return DevProcess(pid=process.pid, log=str(log), url=url, start_ticks=process.start_ticks)


def start_process(workdir: Path, name: str, what: str, argv: list[str], port: int,
                  health_path: str, *, env: Mapping[str, str] | None = None,
                  shown_url: str | None = None) -> DevProcess:
    """Start one more detached process beside the environment (the dashboard) and record it, so
    `kagent dev status` lists it and `kagent dev down` stops it."""
    process = _start_detached(workdir, name, what, argv, port, health_path, env)
    if shown_url:
        process = DevProcess(pid=process.pid, log=process.log, url=shown_url)
    processes = read_state(workdir)
    processes[name] = process
    _write_state(workdir, processes)
    return process


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


def dev_controller_env(agents_url: str) -> dict[str, str]:
    """How the dev controller reaches agents: workflow steps through the local Service proxy,
    rollouts each revision's pods at the local ports the realiser lists (to read their metrics
    and call them), as a controller in a cluster would at Service names and pod IPs."""
    return {"KAGENT_WORKFLOW_AGENT_URL_TEMPLATE": agents_url + "/{namespace}/{name}",
            LOCAL_PODS_URL_ENV: agents_url}


def start_controller(plane: ControlPlane, workdir: Path, agents_url: str) -> DevProcess:
    controller = ControllerProcess(
        plane, identity="kagent-dev", log_dir=workdir, lease_seconds=15, detached=True,
        env=dev_controller_env(agents_url),
    )
    try:
        controller.start()
    except (ProcessError, TimeoutError):
        controller.stop()
        raise
    assert controller.process is not None
    return DevProcess(pid=controller.process.pid, log=str(controller.log_file),
                      url=f"http://127.0.0.1:{controller.metrics_port}/metrics",
                      start_ticks=controller.process.start_ticks)


def stop_processes(workdir: Path) -> list[str]:
    """Stop every dev process (newest first), then forget them; returns their names."""
    processes = read_state(workdir)
    for name in reversed(list(processes)):
        processes[name].supervised().stop(grace=STOP_GRACE_SECONDS)
    (workdir / STATE_FILE).unlink(missing_ok=True)
    return list(processes)


def attached(workdir: Path) -> ControlPlane | None:
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
    existing = attached(workdir)
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


# --- the demo's documents ---------------------------------------------------------------------

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
