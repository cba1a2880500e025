"""A real Kubernetes node on this machine, joined to a :class:`ControlPlane`.

kwok's fake node makes pods *look* Running; this node runs them: kubelet and kube-proxy from the
same Kubernetes release as the control plane (:func:`kagent.local.binaries.node_binaries`),
containerd with runc, the CNI ``bridge`` and ``host-local`` plugins, kube-proxy in iptables mode
and CoreDNS for Service names. Images never come from a registry: the pause image is built here
from the release's own ``pause.c`` and workload images are imported from OCI archives
(:meth:`RealNode.import_image`), so pods use ``imagePullPolicy: Never`` or ``IfNotPresent``.

It needs root and changes the host. Everything it changes, and what :meth:`RealNode.stop` does
about it (docs/development.md, "Real nodes", says the same for users):

- an interface ``kagent0`` (a bridge with no ports) holding the node IP, with a route for the
  Service range through it — deleted;
- the CNI bridge ``kagent-cni0`` and the pods' veth pairs — deleted (the veths go with the pods);
- iptables chains: kube-proxy's and the kubelet's ``KUBE-*`` chains, and the bridge plugin's
  masquerade rules for the pod range — removed (every ``KUBE-*`` chain, the rules jumping to
  them, and the masquerade rules naming our CNI network);
- sysctls: ``net.ipv4.ip_forward``, ``net.bridge.bridge-nf-call-iptables`` (and ``ip6tables``),
  and what the kubelet sets (``vm.overcommit_memory``, ``vm.panic_on_oom``, ``kernel.panic``,
  ``kernel.panic_on_oops``, ``kernel.keys.root_maxkeys``, ``kernel.keys.root_maxbytes``) — each
  put back to the value it had before the node started;
- cgroups under ``/kagent-node`` in every cgroup v1 hierarchy — processes killed, folders removed;
- ``/var/lib/kagent-node``, the kubelet's root (pod volumes, its sockets) — unmounted, removed;
- mounts (pod volumes, container root file systems, network namespaces), all below that folder
  or the node's work folder — unmounted;
- ``/var/log/containers`` (the kubelet's fixed folder of log links) — our links removed, and the
  folder too when the node created it;
- ``/run/kagent-node`` (containerd's sockets) — removed; ``/run/containerd`` (where containerd
  1.6's shims put their sockets, fixed) — removed when the node created it;
- kernel modules the kernel loads on demand (``br_netfilter``, ``overlay``, ``nf_conntrack``,
  ``veth``, ``bridge``…) stay loaded, and conntrack entries expire by themselves: these cannot be
  put back safely.

Every process (containerd and its shims, kubelet, kube-proxy, CoreDNS, the containers) is stopped:
pods are deleted through the API first so the kubelet tears their networks down, then whatever is
left is killed through its cgroup. One real node runs per machine: a claim file under
``~/.cache/kagent`` records it, and a node whose owner died is cleaned up by the next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from kagent.kube import sync_client
from kagent.kube.certs import load_ca, make_client_cert
from kagent.local import binaries as _binaries
from kagent.local import oci
from kagent.local.controlplane import (
    KWOK_NODE_ANNOTATION,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    _free_ports,
)
from kagent.local.nodeconfig import (
    BRIDGE,
    FAKE_NODE_TAINT,
    KUBELET_ROOT,
    NODE_INTERFACE,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    REAL_NODE_LABEL,
    SOCKET_DIR,
    NodePorts,
    apiserver_args,
    cni_config,
    containerd_config,
    corefile,
    host_nameservers,
    kube_proxy_config,
    kubeconfig_document,
    kubelet_config,
)
from kagent.local.nodehost import (
    CONTAINER_LOGS_DIR,
    CONTAINERD_RUN_DIR,
    KERNEL_SETTINGS,
    KUBELET_SYSCTLS,
    STATE_FILE,
    HostClaim,
    RealNodeError,
    create_cgroup_root,
    kube_chains,
    link_exists,
    read_state,
    read_sysctl,
    recorded_process,
    require_host,
    restore_host,
    run,
    write_sysctl,
)
from kagent.local.process import Process, ProcessError, http_probe, start_ticks

log = logging.getLogger("kagent.local.realnode")

_POD_TEARDOWN_SECONDS = 90.0


def pause_image(pause_binary: Path, out: Path, epoch: int = 0) -> Path:
    """The pod sandbox image: one static ``/pause``, run as nobody, packed reproducibly."""
    with tempfile.TemporaryDirectory(prefix="kagent-pause-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        shutil.copy2(pause_binary, root / "pause")
        (root / "pause").chmod(0o755)
        os.utime(root / "pause", (epoch, epoch))
        layer = oci.write_layer(root, ["pause"], Path(tmp) / "blobs", epoch=epoch,
                                created_by=f"pause {_binaries.PAUSE_VERSION}")
        image = oci.Image([layer], oci.ImageConfig(entrypoint=("/pause",), user="65535:65535"),
                          epoch=epoch)
        return image.write_archive(out, PAUSE_IMAGE)


class RealNode:
    """A real node for ``plane``, which must have been started with :func:`apiserver_args`.

    ``exclusive`` (the default) taints the control plane's kwok node so every new pod lands
    here. ``images`` are OCI archives imported before the node registers. Use it as a context
    manager, or :meth:`start` and :meth:`stop`; ``detached`` leaves it running after this
    interpreter exits (``kagent dev up``); :meth:`attach` finds it again to stop it.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        workdir: Path | None = None,
        images: Sequence[Path] = (),
        exclusive: bool = True,
        detached: bool = False,
        binaries: _binaries.NodeBinaries | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        self.plane = plane
        self.workdir = (workdir or plane.workdir / "realnode").absolute()
        self.images = list(images)
        self.exclusive = exclusive
        self.detached = detached
        self.startup_timeout = startup_timeout
        self._binaries = binaries
        self._processes: list[Process] = []
        self._host: dict[str, Any] = {}
        self._ctr: Path | None = None
        self._claim = HostClaim()
        self.ports: NodePorts | None = None
        self.startup_seconds: float | None = None

    # --- where things are ----------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return SOCKET_DIR / "containerd.sock"

    @property
    def name(self) -> str:
        return NODE_NAME

    def log_file(self, component: str) -> Path:
        return self.workdir / component / f"{component}.log"

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        """Prepare the host, start containerd, CoreDNS, kube-proxy and the kubelet, and wait
        until the node is Ready. Whatever was done is undone if this fails half-way."""
        containerd, ctr, runc, cni_dir, _ = require_host()
        node_binaries = self._binaries or _binaries.node_binaries()
        began = time.monotonic()
        deadline = began + self.startup_timeout
        leftover = self._claim.take(self.workdir)
        if leftover is not None:
            restore_host(leftover)
        if (self.workdir / STATE_FILE).exists():
            restore_host(self.workdir)
        self._preflight()
        self._ctr = ctr
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.detached:
            self.plane.add_stop_hook(self.stop)  # drained while the API server still answers
        try:
            self._record_host()  # the state file the reaper watches
            if not self.detached:
                _start_reaper(self.workdir, os.getpid())
            self._prepare_network()
            self.ports = NodePorts(*_free_ports(6))
            kubeconfigs = self._credentials()
            self._start_containerd(containerd, runc, cni_dir, deadline)
            self._import(pause_image(node_binaries.pause, self.workdir / "images" / "pause.oci.tar"))
            for archive in self.images:
                self.import_image(archive)
            self._start_coredns(node_binaries.coredns, deadline)
            self._start_kube_proxy(node_binaries.kube_proxy, kubeconfigs["kube-proxy"], deadline)
            self._start_kubelet(node_binaries.kubelet, kubeconfigs["kubelet"], deadline)
            if self.exclusive:
                self._taint_fake_nodes()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._write_state()
        return self

    def stop(self) -> None:
        """Delete the node's pods (so the kubelet tears their networks down), stop every process,
        kill what is left in the node's cgroups, and put the host back as it was."""
        if not self._processes and not self._host:
            return
        try:
            self._drain()
        except Exception as error:  # noqa: BLE001 - the processes are stopped and killed below
            log.warning("draining the real node's pods failed (%s); stopping it anyway", error)
        for name in ("kubelet", "kube-proxy", "coredns"):
            for process in self._named(name):
                process.stop()
        self._remove_containers()
        for process in self._named("containerd"):
            process.stop()
        self._processes = []
        restore_host(self.workdir, self._host)
        self._host = {}
        self._claim.release(self.workdir)
        with contextlib.suppress(Exception):
            self.plane.remove_stop_hook(self.stop)

    @classmethod
    def attach(cls, plane: ControlPlane, workdir: Path | None = None) -> RealNode | None:
        """A handle on the real node recorded in ``workdir`` (default: beside ``plane``'s
        files), e.g. a detached one started by another process; None if none is recorded."""
        node = cls(plane, workdir=workdir, detached=True)
        state = read_state(node.workdir)
        if state is None:
            return None
        node._host = state.get("host") or {}
        node._processes = [recorded_process(p) for p in state.get("processes", [])]
        node._ctr = Path(shutil.which("ctr") or "ctr")
        return node

    def is_running(self) -> bool:
        return bool(self._processes) and all(p.alive() for p in self._processes)

    # --- images ---------------------------------------------------------------------------------

    def import_image(self, archive: Path) -> str:
        """Import an OCI image archive into the node's containerd; returns its reference."""
        reference = oci.read_archive(archive).reference
        self._import(archive)
        return reference

    def images_present(self) -> list[str]:
        result = self._ctrrun("images", "list", "--quiet")
        return sorted(line for line in result.stdout.splitlines() if line and "@sha256:" not in line)

    def _import(self, archive: Path) -> None:
        self._ctrrun("images", "import", "--no-unpack=false", archive, timeout=600)

    def _ctrrun(self, *args: str | Path, timeout: float = 60.0,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        ctr = self._ctr or Path(shutil.which("ctr") or "ctr")
        return run(ctr, "--address", self.containerd_socket, "--namespace", "k8s.io", *args,
                    timeout=timeout, check=check)

    # --- starting ---------------------------------------------------------------------------------

    def _preflight(self) -> None:
        for link in (NODE_INTERFACE, BRIDGE):
            if link_exists(link):
                raise RealNodeError(f"network interface {link} already exists (another real node, "
                                    f"or one that was not cleaned up: `ip link delete {link}`)")
        save = run("iptables-save", check=False).stdout
        if kube_chains(save):
            raise RealNodeError("this machine already has KUBE-* iptables chains (a Kubernetes node "
                                "runs here); a real node would fight over them")

    def _record_host(self) -> None:
        sysctls = {name: read_sysctl(name) for name in (*KERNEL_SETTINGS, *KUBELET_SYSCTLS)}
        self._host = {
            "sysctls": {k: v for k, v in sysctls.items() if v is not None},
            "created_container_logs_dir": not CONTAINER_LOGS_DIR.exists(),
            "created_containerd_run_dir": not CONTAINERD_RUN_DIR.exists(),
            "links": [NODE_INTERFACE, BRIDGE],
        }
        self._write_state()

    def _prepare_network(self) -> None:
        for name, value in KERNEL_SETTINGS.items():
            if read_sysctl(name) is not None:
                write_sysctl(name, value)
        # A port-less bridge holds the node IP: it needs no kernel module beyond the bridge the
        # pod network uses anyway (some kernels have no "dummy" interfaces).
        run("ip", "link", "add", NODE_INTERFACE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_INTERFACE)
        run("ip", "link", "set", NODE_INTERFACE, "up")
        # Service IPs are routed through the node's own interface, so the host (the API server
        # calling a webhook) reaches them without depending on the machine's default route.
        run("ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", NODE_INTERFACE, "src", NODE_IP)

    def _credentials(self) -> dict[str, Path]:
        """Client certificates signed by the control plane's CA for the kubelet
        (``system:node:<name>``) and kube-proxy (``system:kube-proxy``), and RBAC for the node
        (the control plane authorizes with RBAC alone, without the Node authorizer)."""
        plane = self.plane
        ca = load_ca(plane.ca_file, plane.pki_dir / "ca.key")
        pki = self.workdir / "pki"
        server = plane.server  # host processes: loopback, which the serving certificate names
        kubeconfigs: dict[str, Path] = {}
        for component, user, groups in (("kubelet", f"system:node:{NODE_NAME}", ["system:nodes"]),
                                        ("kube-proxy", "system:kube-proxy", [])):
            cert = make_client_cert(ca, pki, common_name=user, groups=groups, name=component)
            path = self.workdir / component / "kubeconfig"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(kubeconfig_document(
                server, plane.ca_file, cert.cert_file, cert.key_file, user)))
            path.chmod(0o600)
            kubeconfigs[component] = path
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kagent:real-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                          "name": "system:nodes"}],
        }
        status, response = plane.request(
            "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        if status not in (201, 409):
            raise RealNodeError(f"binding system:node for the kubelet failed ({status}): {response}")
        return kubeconfigs

    def _spawn(self, name: str, argv: list[str | Path]) -> Process:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        process = Process.start(argv, name=name, log_file=self.log_file(name), append_log=True,
                                cwd=directory, die_with_parent=not self.detached)
        self._processes.append(process)
        self._write_state()
        return process

    def _named(self, name: str) -> list[Process]:
        return [p for p in self._processes if p.name == name]

    def _wait(self, what: str, check: Callable[[], bool], process: Process, deadline: float) -> None:
        try:
            process.wait_ready(check, timeout=max(deadline - time.monotonic(), 1.0), what=what)
        except ProcessError as error:
            raise RealNodeError(f"{process.name}: {error}") from None

    def _start_containerd(self, containerd: Path, runc: Path, cni_dir: Path, deadline: float) -> None:
        net_d = self.workdir / "cni" / "net.d"
        net_d.mkdir(parents=True, exist_ok=True)
        (net_d / "10-kagent.conflist").write_text(
            json.dumps(cni_config(self.workdir / "cni" / "ipam"), indent=2))
        config = self.workdir / "containerd" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.write_text(containerd_config(self.workdir, cni_dir, runc))
        process = self._spawn("containerd", [containerd, "--config", config, "--log-level", "warn"])
        self._wait("containerd's socket", lambda: self._ctrrun("version", timeout=5,
                                                              check=False).returncode == 0,
                   process, deadline)

    def _start_coredns(self, coredns: Path, deadline: float) -> None:
        assert self.ports is not None
        directory = self.workdir / "coredns"
        directory.mkdir(parents=True, exist_ok=True)
        upstream = host_nameservers(Path("/etc/resolv.conf").read_text()
                                    if Path("/etc/resolv.conf").exists() else "")
        (directory / "Corefile").write_text(corefile(self.plane.kubeconfig, self.ports, upstream))
        process = self._spawn("coredns", [coredns, "-conf", directory / "Corefile"])
        ready = f"http://127.0.0.1:{self.ports.dns_ready}/ready"
        self._wait("CoreDNS /ready", http_probe(ready), process, deadline)

    def _start_kube_proxy(self, kube_proxy: Path, kubeconfig: Path, deadline: float) -> None:
        assert self.ports is not None
        config = self.workdir / "kube-proxy" / "config.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig, self.ports)))
        process = self._spawn("kube-proxy", [kube_proxy, f"--config={config}"])
        # /livez answers once the first sync of the Service rules is done (/healthz also waits
        # for the Node object, which the kubelet has not registered yet).
        livez = f"http://127.0.0.1:{self.ports.proxy_healthz}/livez"
        self._wait("kube-proxy /livez", http_probe(livez), process, deadline)

    def _start_kubelet(self, kubelet: Path, kubeconfig: Path, deadline: float) -> None:
        assert self.ports is not None
        create_cgroup_root()
        directory = self.workdir / "kubelet"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text("")
        config = directory / "config.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            self.workdir, self.ports, self.plane.ca_file, self.containerd_socket)))
        process = self._spawn("kubelet", [
            kubelet, f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={KUBELET_ROOT}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", f"--node-labels={REAL_NODE_LABEL}=true", "--v=1",
        ])
        self._wait(f"node {NODE_NAME} Ready", self._node_ready, process, deadline)

    def _node_ready(self) -> bool:
        status, node = self.plane.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        return status == 200 and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", []))

    def _taint_fake_nodes(self) -> None:
        status, nodes = self.plane.request("GET", "/api/v1/nodes")
        if status != 200:
            raise RealNodeError(f"listing nodes failed ({status}): {nodes}")
        for node in nodes.get("items", []):
            annotations = node["metadata"].get("annotations") or {}
            if KWOK_NODE_ANNOTATION not in annotations:
                continue
            taints = [t for t in node["spec"].get("taints") or [] if t["key"] != FAKE_NODE_TAINT["key"]]
            self._patch_node(node["metadata"]["name"], {"spec": {"taints": [*taints, FAKE_NODE_TAINT]}})

    def _patch_node(self, name: str, patch: dict[str, Any]) -> None:
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        with contextlib.closing(sync_client(self.plane.kubeconfig)) as client:
            client.patch(Node, name, patch, patch_type=PatchType.MERGE)

    def _write_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = {
            "node": NODE_NAME,
            "detached": self.detached,
            "host": self._host,
            "processes": [{"name": p.name, "pid": p.pid, "start_ticks": p.start_ticks,
                           "log_file": str(p.log_file)} for p in self._processes],
        }
        partial = self.workdir / (STATE_FILE + ".partial")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.workdir / STATE_FILE)

    # --- stopping ---------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Cordon the node and delete its pods, so the kubelet stops them through the CRI (which
        releases their addresses and masquerade rules), then wait for containerd to show no
        running sandbox."""
        if not any(p.alive() for p in self._named("kubelet")):
            return
        self._patch_node(NODE_NAME, {"spec": {"unschedulable": True}})
        status, pods = self.plane.request(
            "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")
        if status == 200:
            for pod in pods.get("items", []):
                meta = pod["metadata"]
                self.plane.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                   {"gracePeriodSeconds": 0})
        deadline = time.monotonic() + _POD_TEARDOWN_SECONDS
        while time.monotonic() < deadline:
            tasks = self._ctrrun("tasks", "list", "--quiet", check=False, timeout=10).stdout.split()
            if not tasks:
                return
            time.sleep(0.5)

    def _remove_containers(self) -> None:
        """Kill and delete whatever containers containerd still has (the kubelet is gone)."""
        if not any(p.alive() for p in self._named("containerd")):
            return
        for task in self._ctrrun("tasks", "list", "--quiet", check=False, timeout=10).stdout.split():
            self._ctrrun("tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=10)
        time.sleep(0.5)
        for task in self._ctrrun("tasks", "list", "--quiet", check=False, timeout=10).stdout.split():
            self._ctrrun("tasks", "delete", "--force", task, check=False, timeout=20)
        for container in self._ctrrun("containers", "list", "--quiet", check=False,
                                       timeout=10).stdout.split():
            self._ctrrun("containers", "delete", container, check=False, timeout=20)


def _start_reaper(workdir: Path, owner: int) -> None:
    """A watchdog that outlives its owner: if the owner dies without stopping the node (SIGKILL,
    a crash), it stops what the kernel did not (containerd's shims and the containers run in
    sessions of their own) and puts the host back. It exits once the node stops cleanly."""
    Process.start([sys.executable, "-m", "kagent.local.realnode", "reap", str(workdir), str(owner)],
                  name="realnode-reaper")


def reap(workdir: Path, owner: int, poll: float = 1.0) -> bool:
    """Wait while ``owner`` lives and the node in ``workdir`` runs; clean up after an owner that
    died first. True when it cleaned up."""
    owner_process = Process.attach(owner, name="owner", start_ticks=start_ticks(owner))
    while (workdir / STATE_FILE).exists():
        if not owner_process.alive():
            state = read_state(workdir) or {}
            for entry in state.get("processes", []):
                recorded_process(entry).stop(grace=2)
            restore_host(workdir, state.get("host"))
            HostClaim().release(workdir)
            return True
        time.sleep(poll)
    return False


def start_detached(workdir: Path, images: Sequence[Path] = ()) -> tuple[ControlPlane, RealNode]:
    """A control plane with a real node, both outliving this process (``kagent dev up
    --real-nodes``); :func:`stop_detached` stops them."""
    require_host()
    plane = ControlPlane(workdir=workdir, detached=True, extra_apiserver_args=apiserver_args(workdir))
    plane.start()
    try:
        node = RealNode(plane, images=images, detached=True).start()
    except BaseException:
        plane.stop()
        raise
    return plane, node


def stop_detached(workdir: Path) -> bool:
    """Stop the real node recorded beside the control plane in ``workdir`` (draining its pods
    while the API server still runs); False when there is none."""
    from kagent.local.controlplane import ControlPlaneError

    try:
        plane = ControlPlane.attach(workdir)
    except ControlPlaneError:
        plane = ControlPlane(workdir=workdir, detached=True)
    node = RealNode.attach(plane)
    if node is None:
        return False
    node.stop()
    return True


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        reap(Path(sys.argv[2]), int(sys.argv[3]))
