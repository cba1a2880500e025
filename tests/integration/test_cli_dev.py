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
    assert f"export KUBECONFIG={config}" in up.stdout
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
        assert _kagent("dev", "status", "--kubeconfig", str(config)).returncode == 0
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
    assert not config.exists()
    assert not [pid for pid in pids if _alive(pid)], "dev down must leave no process behind"
    assert _kagent("dev", "status", "--kubeconfig", str(config)).returncode == 3


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
