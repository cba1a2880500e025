"""`kagent dev up` / `kagent dev down` as a user runs them: separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kagent.local.binaries import kubectl
from kagent.local.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _kagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kagent", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_dev_up_installs_the_api_and_down_stops_everything(tmp_path: Path) -> None:
    config = tmp_path / "dev" / "kubeconfig"
    up = _kagent("dev", "up", "--kubeconfig", str(config))
    assert up.returncode == 0, up.stderr
    # stdout is only what `eval $(kagent dev up)` needs; the progress and the list are stderr's.
    assert up.stdout == f"export KUBECONFIG={config}\n"
    assert "ready in" in up.stderr and "controller metrics" in up.stderr
    workdir = config.parent / f".{config.name}.kagent-dev"
    pids: list[int] = []
    try:
        env = {**os.environ, "KUBECONFIG": str(config)}
        crds = subprocess.run([str(kubectl()), "get", "crd", "-o", "name"], env=env,
                              capture_output=True, text=True, check=True).stdout
        for plural in ("agents", "tools", "memories", "workflows", "workflowruns"):
            assert f"{plural}.kagent.dev" in crds
        again = _kagent("dev", "up", "--kubeconfig", str(config))
        assert again.returncode == 0 and "already running" in again.stderr
        assert again.stdout == f"export KUBECONFIG={config}\n"
        status = _kagent("dev", "status", "--kubeconfig", str(config))
        assert status.returncode == 0, status.stderr
        # The report is on stdout, whole lines however long (no wrapping at 80 columns when
        # stdout is not a terminal), so `kagent dev status | grep` finds what it looks for.
        assert status.stderr == ""
        assert f"running — kubeconfig {config}" in status.stdout.splitlines()
        controller_line = [line for line in status.stdout.splitlines()
                           if "controller metrics" in line]
        assert len(controller_line) == 1 and "/metrics" in controller_line[0]
        assert controller_line[0].endswith("controller-kagent-dev.log")
        command = f"{sys.executable} -m kagent dev status --kubeconfig {config}"
        grep = subprocess.run(
            f"{command} | grep -c 'controller metrics'", shell=True, capture_output=True, text=True, timeout=120, check=False)
        assert grep.stdout.strip() == "1", grep.stdout + grep.stderr
        pids = list(ControlPlane.attach(workdir).pids.values())
        assert len(pids) == 5 and all(_alive(pid) for pid in pids)
        processes = json.loads((workdir / "dev.json").read_text())["processes"]
        assert set(processes) == {"pods", "controller"}  # no --mock-llm: no scripted model
        for process in processes.values():
            assert _alive(process["pid"])
            pids.append(process["pid"])
        # The controller and its webhook are live: a cyclic workflow is refused by the webhook.
        cyclic = "apiVersion: kagent.dev/v1alpha1\nkind: Workflow\nmetadata: {name: c, namespace: default}\n" \
                 "spec: {steps: [{name: a, agent: x, dependsOn: [a]}]}\n"
        refused = subprocess.run([str(kubectl()), "apply", "-f", "-"], input=cyclic, env=env,
                                 capture_output=True, text=True, check=False)
        assert refused.returncode != 0 and "admission webhook" in refused.stderr
    finally:
        down = _kagent("dev", "down", "--kubeconfig", str(config))
    assert down.returncode == 0, down.stderr
    assert down.stdout == "stopped\n"
    assert not config.exists()
    assert not [pid for pid in pids if _alive(pid)], "dev down must leave no process behind"
    stopped = _kagent("dev", "status", "--kubeconfig", str(config))
    assert stopped.returncode == 3 and stopped.stdout == "not running\n"
    again = _kagent("dev", "down", "--kubeconfig", str(config))
    assert again.returncode == 0 and again.stdout == f"nothing is running for {config}\n"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
