"""`kagent dev`: a real local control plane for trying Kagent without a cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import typer
from rich.console import Console

from kagent.api.crd import all_crds, render_yaml
from kagent.testing.controller import ControllerProcess
from kagent.testing.controlplane import ControlPlane, ControlPlaneError

app = typer.Typer(help="Run Kagent locally on a real control plane.", no_args_is_help=True)
console = Console(stderr=True)

DEFAULT_HOME = Path.home() / ".kagent" / "dev"
KubeconfigOption = typer.Option(
    None, "--kubeconfig", help="Where to write the kubeconfig (default ~/.kagent/dev/kubeconfig)."
)


def dev_paths(kubeconfig: Path | None) -> tuple[Path, Path]:
    """(kubeconfig, workdir) — the workdir sits beside the kubeconfig so `down` finds it."""
    target = (kubeconfig or DEFAULT_HOME / "kubeconfig").expanduser().absolute()
    return target, target.parent / f".{target.name}.kagent-dev"


def install_crds(plane: ControlPlane) -> None:
    manifests = "---\n".join(render_yaml(m) for m in all_crds().values())
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifests)
    names = [f"crd/{m['metadata']['name']}" for m in all_crds().values()]
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@app.command("up")
def up(
    kubeconfig: Path = KubeconfigOption,
    crds_only: bool = typer.Option(False, "--crds-only", help="Install only the API (no controller)."),
) -> None:
    """Start a local control plane in the background and install Kagent's CRDs."""
    target, workdir = dev_paths(kubeconfig)
    existing = _attached(workdir)
    if existing is not None and existing.is_running():
        console.print(f"[yellow]already running[/] (kubeconfig: {target})")
        raise typer.Exit(0)
    began = time.monotonic()
    plane = ControlPlane(workdir=workdir, detached=True)
    with console.status("starting etcd, kube-apiserver, controller-manager, scheduler and kwok…"):
        try:
            plane.start()
        except ControlPlaneError as error:
            console.print(f"[red]the control plane did not start:[/] {error}")
            raise typer.Exit(1) from None
    with console.status("installing Kagent's CRDs…"):
        try:
            install_crds(plane)
        except Exception as error:
            plane.stop()
            console.print(f"[red]installing the CRDs failed:[/] {error}")
            raise typer.Exit(1) from None
    if not crds_only:
        with console.status("starting the controller and admission webhook…"):
            try:
                controller = ControllerProcess(plane, identity="kagent-dev", log_dir=workdir,
                                               lease_seconds=15).start()
            except (RuntimeError, TimeoutError) as error:
                plane.stop()
                console.print(f"[red]the controller did not start:[/] {error}")
                raise typer.Exit(1) from None
        assert controller.process is not None
        _controller_state(workdir).write_text(json.dumps({
            "pid": controller.process.pid, "log": str(controller.log_file),
            "metrics": f"http://127.0.0.1:{controller.metrics_port}/metrics",
        }))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plane.kubeconfig, target)
    target.chmod(0o600)
    console.print(f"[green]ready[/] in {time.monotonic() - began:.1f}s — API server {plane.server}")
    typer.echo(f"export KUBECONFIG={target}")
    console.print("then:  kubectl get kagent -A      stop:  kagent dev down"
                  + (f" --kubeconfig {target}" if kubeconfig else ""))


@app.command("down")
def down(kubeconfig: Path = KubeconfigOption) -> None:
    """Stop the local control plane started by `kagent dev up`."""
    target, workdir = dev_paths(kubeconfig)
    _stop_controller(workdir)
    if not ControlPlane.stop_detached(workdir):
        console.print(f"nothing is running for {target}")
        raise typer.Exit(0)
    target.unlink(missing_ok=True)
    console.print("[green]stopped[/]")


@app.command("status")
def status(kubeconfig: Path = KubeconfigOption) -> None:
    """Say whether the local control plane is running. Exit code 0 if it is, 3 if not."""
    target, workdir = dev_paths(kubeconfig)
    plane = _attached(workdir)
    if plane is None or not plane.is_running():
        console.print("not running")
        raise typer.Exit(3)
    console.print(f"running — kubeconfig {target}")


def _controller_state(workdir: Path) -> Path:
    return workdir / "controller.json"


def _stop_controller(workdir: Path) -> None:
    """Stop the dev controller's process group (SIGTERM, then SIGKILL)."""
    state = _controller_state(workdir)
    try:
        pid = int(json.loads(state.read_text())["pid"])
    except (FileNotFoundError, KeyError, ValueError):
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            break
    state.unlink(missing_ok=True)


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
