"""`kagent dev up --real-nodes`: a detached control plane with a real node and the chart's
controller as pods, outliving the command; `kagent dev down` drains the node, stops every process
and puts the host back as it was (interfaces, iptables, sysctls, cgroups, mounts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hack.image import build as image_build
from kagent.local import nodeconfig, nodehost
from tests.helpers import REAL_POD_TIER

# Building the image (when its sources changed) and starting many pods on a busy 2-core machine
# outlast the suite's 10-minute default; each wait inside still has its own, named bound.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400), REAL_POD_TIER]


def host_snapshot(folder: Path) -> dict[str, object]:
    """What a real node changes on the host, read now (interfaces and mounts: those a node
    makes, so other work on the machine does not disturb the comparison)."""
    links = sorted(p.name for p in Path("/sys/class/net").iterdir()
                   if p.name.startswith(("kagent", "veth")))
    chains = nodehost.kube_chains(subprocess.run(["iptables-save"], capture_output=True, text=True,
                                                 check=False).stdout)
    sysctls = {name: nodehost.read_sysctl(name)
               for name in (*nodehost.KERNEL_SETTINGS, *nodehost.KUBELET_SYSCTLS)}
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{nodeconfig.CGROUP_ROOT}"))
    mounts = [point for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(folder) in (point := line.split()[4]) or "kagent-node" in point]
    run_dirs = [str(d) for d in (nodeconfig.SOCKET_DIR, nodehost.CONTAINERD_RUN_DIR, nodeconfig.KUBELET_ROOT)
                if d.exists()]
    return {"links": links, "chains": chains, "sysctls": sysctls, "cgroups": cgroups,
            "mounts": sorted(mounts), "run": run_dirs}


def node_processes(workdir: Path) -> list[str]:
    """Processes whose command line names the node's work folder or its containerd's socket
    folder (the control plane, the node's components, containerd's shims)."""
    marks = (str(workdir), str(nodeconfig.SOCKET_DIR))
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in text for mark in marks):
            found.append(f"{cmdline.parent.name}: {text[:160]}")
    return found


def test_dev_up_with_real_nodes_and_down_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    problem = nodehost.host_problem() or image_build.why_not_buildable()
    if problem is not None:
        pytest.skip(f"no real node here: {problem}")
    archive = image_build.ensure_built()
    before = host_snapshot(tmp_path)
    env = {**os.environ, "KAGENT_DEV_HOME": str(tmp_path / "dev")}
    kagent = [sys.executable, "-m", "kagent"]
    up = subprocess.run([*kagent, "dev", "up", "--real-nodes", "--image-archive", str(archive)],
                        env=env, capture_output=True, text=True, timeout=900, check=False)
    workdir = tmp_path / "dev" / ".kubeconfig.kagent-dev"
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        kubectl = [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={tmp_path / 'dev' / 'kubeconfig'}"]
        pods = json.loads(subprocess.run([*kubectl, "get", "pods", "-n", "kagent-system", "-o", "json"],
                                         capture_output=True, text=True, check=True).stdout)["items"]
        assert len(pods) == 2
        assert all(p["spec"]["nodeName"] == nodeconfig.NODE_NAME and p["status"]["phase"] == "Running"
                   for p in pods)
        # detached: the command has exited, the node's processes run on
        assert any("kubelet" in line for line in node_processes(workdir))
    finally:
        down = subprocess.run([*kagent, "dev", "down"], env=env, capture_output=True, text=True,
                              timeout=600, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert node_processes(workdir) == []
    after = host_snapshot(tmp_path)
    assert after == before


OWNER = """
import sys, time
from pathlib import Path
from kagent.local.controlplane import ControlPlane
from kagent.local import nodeconfig, realnode
work = Path(sys.argv[1])
plane = ControlPlane(workdir=work, extra_apiserver_args=nodeconfig.apiserver_args(work)).start()
realnode.RealNode(plane).start()
plane.kubectl("run", "sleeper", "--image", nodeconfig.PAUSE_IMAGE, "--image-pull-policy=Never")
plane.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=180s")
print("READY", flush=True)
time.sleep(3600)
"""


def test_a_killed_owner_leaves_no_process_and_the_host_as_it_was(tmp_path: Path) -> None:
    """SIGKILL the process that started a node with a running pod: the kernel kills its direct
    children, and the node's reaper stops the rest (containerd's shims, the containers) and puts
    the host back."""
    problem = nodehost.host_problem()
    if problem is not None:
        pytest.skip(f"no real node here: {problem}")
    before = host_snapshot(tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "cp")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert owner.stdout is not None
        for line in owner.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        assert owner.poll() is None, "".join(lines[-40:])
        assert any("containerd-shim" in p for p in node_processes(tmp_path / "cp"))
    finally:
        owner.kill()
        owner.wait()
    from tests.helpers import wait_for

    wait_for(lambda: not node_processes(tmp_path / "cp"), timeout=120,
             what=f"the node's processes to go: {node_processes(tmp_path / 'cp')}")
    wait_for(lambda: host_snapshot(tmp_path) == before, timeout=60, what="the host put back")
