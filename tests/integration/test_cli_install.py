"""`kagent install` / `kagent uninstall`: prerequisite checklist and the Helm release, on a real
control plane of its own (the chart owns cluster-wide webhook configurations)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kagent.local.controlplane import ControlPlane
from kagent.local.services import free_port

pytestmark = pytest.mark.integration


def kagent(plane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True,
                          text=True, timeout=400, check=False, env=env)


def test_check_prints_the_checklist(control_plane: ControlPlane) -> None:
    result = kagent(control_plane, "install", "--check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the checklist is the report
    assert "✓ cluster reachable" in result.stdout
    assert "✓ Kubernetes ≥ 1.28" in result.stdout
    assert "self-managed" in result.stdout
    assert "KEDA" in result.stdout


def test_cert_manager_is_required_when_asked_for(control_plane: ControlPlane) -> None:
    result = kagent(control_plane, "install", "--check", "--cert-manager")
    assert result.returncode == 1
    assert "✗ cert-manager present" in result.stdout
    assert "prerequisites" in result.stderr


def test_bad_set_is_a_usage_error(control_plane: ControlPlane) -> None:
    assert kagent(control_plane, "install", "--set", "novalue").returncode == 2


@pytest.fixture(scope="module")
def own_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        yield plane


def test_install_then_uninstall(own_plane: ControlPlane) -> None:
    port = free_port()
    installed = kagent(own_plane, "install", "--set", f"webhook.url=https://127.0.0.1:{port}")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Kagent installed" in installed.stdout
    assert "next: `kagent get agents -A`" in installed.stderr  # a hint, not the report
    deployments = own_plane.kubectl("get", "deployments", "-n", "kagent-system", "-o", "name")
    assert "kagent" in deployments.stdout
    assert "5 CRDs applied" in installed.stdout
    # An upgrade is the same command; it re-applies the CRDs, which Helm alone would not.
    own_plane.kubectl("patch", "crd", "agents.kagent.dev", "--type", "json", "-p",
                      '[{"op": "replace", "path": "/spec/names/shortNames", "value": ["stale"]}]')
    upgraded = kagent(own_plane, "install", "--set", f"webhook.url=https://127.0.0.1:{port}")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    short = own_plane.kubectl("get", "crd", "agents.kagent.dev", "-o",
                              "jsonpath={.spec.names.shortNames}").stdout
    assert "stale" not in short and "ag" in short
    removed = kagent(own_plane, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Kagent uninstalled from kagent-system.\n"
    again = kagent(own_plane, "uninstall")
    assert again.returncode == 3
    assert "helm list" in again.stderr
