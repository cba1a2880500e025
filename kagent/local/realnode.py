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

import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
    _die_with_parent,
    _free_ports,
    _proc_stat,
    _tail,
)

NODE_NAME = "kagent-node-0"
NODE_IP = "10.250.0.20"
NODE_INTERFACE = "kagent0"
POD_SUBNET = "10.245.0.0/24"
BRIDGE = "kagent-cni0"
CNI_NETWORK = "kagent-realnode"
CGROUP_ROOT = "kagent-node"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = f"localhost/kagent/pause:{_binaries.PAUSE_VERSION}"
REAL_NODE_LABEL = "kagent.dev/real-node"
FAKE_NODE_TAINT = {"key": "kagent.dev/fake-node", "value": "true", "effect": "NoSchedule"}
CONTAINER_LOGS_DIR = Path("/var/log/containers")
SOCKET_DIR = Path("/run/kagent-node")
"""containerd's sockets: unix socket paths must stay short, work folders need not."""
KUBELET_ROOT = Path("/var/lib/kagent-node")
"""The kubelet's root folder (pod volumes, its plugin sockets): socket paths below it must stay
short, so it cannot live in an arbitrary work folder."""
CONTAINERD_RUN_DIR = Path("/run/containerd")
"""Where containerd 1.6's shims put their sockets, whatever the configuration says."""
CNI_PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
STATE_FILE = "realnode.json"

KERNEL_SETTINGS = {
    # what the node itself needs: routing between the pods' bridge and the host, and iptables
    # (kube-proxy's Service rules) applied to bridged traffic
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
KUBELET_SYSCTLS = (
    # the kubelet sets these itself (protectKernelDefaults: false); recorded to be put back
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

_STOP_GRACE_SECONDS = 10.0
_POD_TEARDOWN_SECONDS = 90.0
_POLL_SECONDS = 0.2


class RealNodeError(RuntimeError):
    """The real node cannot start here, or failed to; the message says what and why."""


# --- pure parts: configuration files ------------------------------------------------------------


def apiserver_args(plane_workdir: Path) -> list[str]:
    """API server flags a control plane needs before a real node can join: it must be reachable
    from pods (the ``kubernetes`` Service leads to the node IP) and call kubelets (logs, exec)
    with a client certificate. Pass them as ``ControlPlane(extra_apiserver_args=…)``."""
    pki = plane_workdir / "pki"
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={NODE_IP}",
        f"--kubelet-client-certificate={pki / 'admin.crt'}",
        f"--kubelet-client-key={pki / 'admin.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """The pod network: one Linux bridge, addresses from a host-local range, the host as the
    pods' gateway (so they reach the node IP, the API server and CoreDNS)."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


DISABLED_CONTAINERD_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
)


def containerd_config(
    workdir: Path, cni_bin_dir: Path, runc: Path, sockets: Path = SOCKET_DIR
) -> str:
    """containerd 1.6 configuration (version 2): files under ``workdir``, sockets in
    ``sockets``; the CRI with runc on cgroupfs and OOM scores no lower than containerd's own (the
    host refuses negative ones)."""
    root = workdir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f'root = "{root / "root"}"',
        f'state = "{root / "state"}"',
        "oom_score = 0",
        "disabled_plugins = [" + ", ".join(f'"{p}"' for p in DISABLED_CONTAINERD_PLUGINS) + "]",
        "[grpc]",
        f'  address = "{sockets / "containerd.sock"}"',
        "[ttrpc]",
        f'  address = "{sockets / "containerd.sock.ttrpc"}"',
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{root / "opt"}"',
        f"[{cri}]",
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        "  restrict_oom_score_adj = true",
        "  disable_apparmor = true",
        "  netns_mounts_under_state_dir = true",
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        f'  BinaryName = "{runc}"',
        f'  Root = "{root / "runc"}"',
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        f'  bin_dir = "{cni_bin_dir}"',
        f'  conf_dir = "{workdir / "cni" / "net.d"}"',
        "  max_conf_num = 1",
        "",
    ])


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int


def kubelet_config(workdir: Path, ports: NodePorts, ca_file: Path, runtime_socket: Path) -> dict[str, Any]:
    """KubeletConfiguration for this host: cgroup v1 with cgroupfs, no negative OOM score, DNS at
    the node IP, every file below ``workdir``; eviction and image GC thresholds out of the way
    (this is a test node on a shared disk, not a production one)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "protectKernelDefaults": False,
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(workdir / "kubelet" / "resolv.conf"),
        "podLogsDir": str(workdir / "pod-logs"),
        "staticPodPath": "",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "mergeDefaultEvictionSettings": False,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "maxPods": 110,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(kubeconfig: Path, ports: NodePorts) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode, no conntrack sysctls, NodePorts only on the node
    IP (never on the host's own interfaces), no OOM score change."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_SUBNET,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "oomScoreAdj": 0,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


def corefile(kubeconfig: Path, ports: NodePorts, upstream: Sequence[str]) -> str:
    """CoreDNS answering cluster.local from the API server, on the node IP only."""
    forward = f"    forward . {' '.join(upstream)}\n" if upstream else ""
    return (
        ".:53 {\n"
        f"    bind {NODE_IP}\n"
        "    errors\n"
        f"    health 127.0.0.1:{ports.dns_health}\n"
        f"    ready 127.0.0.1:{ports.dns_ready}\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig} kagent\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 5\n"
        "    }\n"
        "    cache 5\n"
        f"{forward}"
        "}\n"
    )


def host_nameservers(resolv_conf: str) -> list[str]:
    """Upstream servers for names outside the cluster: the host's, when CoreDNS (a host
    process) can reach them."""
    servers = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(parts[1])
                servers.append(parts[1])
    return servers


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


def kubeconfig_document(server: str, ca_file: Path, cert_file: Path, key_file: Path,
                        user: str) -> dict[str, Any]:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kagent", "cluster": {"server": server,
                                                    "certificate-authority-data": b64(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_file),
                                          "client-key-data": b64(key_file)}}],
        "contexts": [{"name": "kagent", "context": {"cluster": "kagent", "user": user}}],
        "current-context": "kagent",
    }


def kube_chains(iptables_save: str) -> dict[str, list[str]]:
    """Per table, the chains named ``KUBE-*`` in ``iptables-save`` output."""
    chains: dict[str, list[str]] = {}
    table = ""
    for line in iptables_save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":KUBE-"):
            chains.setdefault(table, []).append(line[1:].split()[0])
    return chains


def cni_masquerade_rules(iptables_save: str) -> list[str]:
    """``-A`` rules of the nat table that our CNI network's masquerading added."""
    marker = f'name: \\"{CNI_NETWORK}\\"'
    plain = f'name: "{CNI_NETWORK}"'
    rules = []
    table = ""
    for line in iptables_save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "nat" and line.startswith("-A ") and (marker in line or plain in line):
            rules.append(line)
    return rules


# --- host state: what we change, recorded so it can be put back --------------------------------


def _run(*argv: str | Path, check: bool = True, timeout: float = 60.0,
         input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, check=False, input=input_text)
    if check and result.returncode != 0:
        raise RealNodeError(f"{' '.join(str(a) for a in argv)} failed ({result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(value + "\n")
    except OSError as error:
        raise RealNodeError(f"setting {name}={value} failed: {error}") from None


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _mounts_below(folder: Path) -> list[str]:
    """Mount points at or below ``folder``, deepest first (the order to unmount them in)."""
    prefix = str(folder.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (each v1 controller, and the unified one)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] in ("cgroup", "cgroup2"):
                found.append(Path(fields[4]))
    return found


def _cgroup_dirs() -> list[Path]:
    """Our cgroup folder in every hierarchy where it exists."""
    return [mount / CGROUP_ROOT for mount in _cgroup_mounts() if (mount / CGROUP_ROOT).is_dir()]


def _create_cgroup_root() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset needs the CPUs and
    memory nodes of its parent before anything can join it."""
    for mount in _cgroup_mounts():
        folder = mount / CGROUP_ROOT
        folder.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (mount / setting).exists() and not (folder / setting).read_text().strip():
                (folder / setting).write_text((mount / setting).read_text())


def _pids_in_cgroups(folders: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for folder in folders:
        for procs in folder.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroup_tree(folder: Path) -> None:
    for child in sorted((p for p in folder.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


# --- processes ------------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    pid: int
    start_ticks: int | None
    log_file: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        with contextlib.suppress(ChildProcessError, OSError):
            if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                return False
        stat = _proc_stat(self.pid)
        if stat is None:
            return False
        state, ticks = stat
        return state not in ("Z", "X") and (self.start_ticks is None or ticks == self.start_ticks)

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)


# --- the node ------------------------------------------------------------------------------------


def _require_host() -> tuple[Path, Path, Path, Path, Path]:
    """(containerd, ctr, runc, CNI plugin folder, iptables) or a clear error naming what lacks."""
    if os.name != "posix" or not Path("/proc/self/mountinfo").exists():
        raise RealNodeError("a real node needs Linux")
    if os.geteuid() != 0:
        raise RealNodeError("a real node needs root (it creates network interfaces, cgroups and "
                            "mounts)")
    found: dict[str, Path] = {}
    for tool, package in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                          ("iptables", "iptables"), ("iptables-save", "iptables"),
                          ("ip", "iproute2")):
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if path is None:
            raise RealNodeError(f"a real node needs {tool} (Debian package {package}; "
                                "hack/system-deps.sh installs it)")
        found[tool] = Path(path)
    cni_dir = next((d for d in CNI_PLUGIN_DIRS if all((d / p).is_file() for p in CNI_PLUGINS)), None)
    if cni_dir is None:
        raise RealNodeError(f"a real node needs the CNI plugins {', '.join(CNI_PLUGINS)} in "
                            f"{' or '.join(map(str, CNI_PLUGIN_DIRS))} (Debian package "
                            "containernetworking-plugins)")
    if read_sysctl("net.bridge.bridge-nf-call-iptables") is None:
        _run("modprobe", "br_netfilter", check=False)
        if read_sysctl("net.bridge.bridge-nf-call-iptables") is None:
            raise RealNodeError("a real node needs the br_netfilter kernel module "
                                "(Services between pods on one bridge go through iptables)")
    return found["containerd"], found["ctr"], found["runc"], cni_dir, found["iptables"]


def host_problem() -> str | None:
    """Why a real node cannot run on this machine (not root, a tool or kernel feature missing),
    or None: what a test tier skips on, naming the reason."""
    try:
        _require_host()
    except RealNodeError as error:
        return str(error)
    return None


class _HostClaim:
    """One real node per machine: a claim file naming the node's work folder while it runs."""

    def __init__(self) -> None:
        self.path = _binaries.cache_root() / "realnode.claim"

    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = (self.path.parent / "realnode.lock").open("w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def take(self, workdir: Path) -> Path | None:
        """Claim the machine for ``workdir``; returns the work folder of a previous node whose
        owner died without cleaning up (to clean it first), raises if one is running."""
        with self._locked():
            previous = None
            with contextlib.suppress(OSError, ValueError):
                previous = Path(json.loads(self.path.read_text())["workdir"])
            if previous is not None and previous != workdir:
                state = _read_state(previous)
                if state and any(_Process(p["name"], p["pid"], p.get("start_ticks"), Path()).alive()
                                 for p in state.get("processes", [])):
                    raise RealNodeError(f"a real node already runs on this machine (work folder "
                                        f"{previous}); stop it first")
            self.path.write_text(json.dumps({"workdir": str(workdir), "pid": os.getpid()}))
            return previous if previous != workdir else None

    def release(self, workdir: Path) -> None:
        with self._locked(), contextlib.suppress(OSError, ValueError):
            if Path(json.loads(self.path.read_text())["workdir"]) == workdir:
                self.path.unlink()


def _read_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


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
        self._processes: list[_Process] = []
        self._host: dict[str, Any] = {}
        self._ctr: Path | None = None
        self._claim = _HostClaim()
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
        containerd, ctr, runc, cni_dir, _ = _require_host()
        node_binaries = self._binaries or _binaries.node_binaries()
        began = time.monotonic()
        deadline = began + self.startup_timeout
        leftover = self._claim.take(self.workdir)
        if leftover is not None:
            RealNode._cleanup_workdir(leftover)
        if (self.workdir / STATE_FILE).exists():
            RealNode._cleanup_workdir(self.workdir)
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
        with contextlib.suppress(Exception):
            self._drain()
        for name in ("kubelet", "kube-proxy", "coredns"):
            for process in self._named(name):
                process.stop()
        self._remove_containers()
        for process in self._named("containerd"):
            process.stop()
        self._processes = []
        RealNode._cleanup_workdir(self.workdir, self._host)
        self._host = {}
        self._claim.release(self.workdir)
        with contextlib.suppress(Exception):
            self.plane.remove_stop_hook(self.stop)

    @classmethod
    def attach(cls, plane: ControlPlane, workdir: Path | None = None) -> RealNode | None:
        """A handle on the real node recorded in ``workdir`` (default: beside ``plane``'s
        files), e.g. a detached one started by another process; None if none is recorded."""
        node = cls(plane, workdir=workdir, detached=True)
        state = _read_state(node.workdir)
        if state is None:
            return None
        node._host = state.get("host") or {}
        node._processes = [_Process(p["name"], p["pid"], p.get("start_ticks"), Path(p["log_file"]))
                           for p in state.get("processes", [])]
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
        result = self._ctr_run("images", "list", "--quiet")
        return sorted(line for line in result.stdout.splitlines() if line and "@sha256:" not in line)

    def _import(self, archive: Path) -> None:
        self._ctr_run("images", "import", "--no-unpack=false", archive, timeout=600)

    def _ctr_run(self, *args: str | Path, timeout: float = 60.0,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        ctr = self._ctr or Path(shutil.which("ctr") or "ctr")
        return _run(ctr, "--address", self.containerd_socket, "--namespace", "k8s.io", *args,
                    timeout=timeout, check=check)

    # --- starting ---------------------------------------------------------------------------------

    def _preflight(self) -> None:
        for link in (NODE_INTERFACE, BRIDGE):
            if _link_exists(link):
                raise RealNodeError(f"network interface {link} already exists (another real node, "
                                    f"or one that was not cleaned up: `ip link delete {link}`)")
        save = _run("iptables-save", check=False).stdout
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
        _run("ip", "link", "add", NODE_INTERFACE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_INTERFACE)
        _run("ip", "link", "set", NODE_INTERFACE, "up")
        # Service IPs are routed through the node's own interface, so the host (the API server
        # calling a webhook) reaches them without depending on the machine's default route.
        _run("ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", NODE_INTERFACE, "src", NODE_IP)

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

    def _spawn(self, name: str, argv: list[str | Path]) -> _Process:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        log_file = self.log_file(name)
        preexec = None if self.detached else _die_with_parent(os.getpid())
        with log_file.open("ab") as log:
            popen = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=directory, start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only calls prctl, resolved before fork
            )
        stat = _proc_stat(popen.pid)
        process = _Process(name, popen.pid, stat[1] if stat else None, log_file, popen)
        self._processes.append(process)
        self._write_state()
        return process

    def _named(self, name: str) -> list[_Process]:
        return [p for p in self._processes if p.name == name]

    def _wait(self, what: str, check: Callable[[], bool], process: _Process, deadline: float) -> None:
        while True:
            with contextlib.suppress(Exception):
                if check():
                    return
            if not process.alive():
                raise RealNodeError(f"{process.name} exited while waiting for {what}; last lines "
                                    f"of {process.log_file}:\n{_tail(process.log_file)}")
            if time.monotonic() > deadline:
                raise RealNodeError(f"timed out waiting for {what}; last lines of "
                                    f"{process.log_file}:\n{_tail(process.log_file)}")
            time.sleep(_POLL_SECONDS)

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
        self._wait("containerd's socket", lambda: self._ctr_run("version", timeout=5,
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
        self._wait("CoreDNS /ready", lambda: _http_ok(ready), process, deadline)

    def _start_kube_proxy(self, kube_proxy: Path, kubeconfig: Path, deadline: float) -> None:
        assert self.ports is not None
        config = self.workdir / "kube-proxy" / "config.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig, self.ports)))
        process = self._spawn("kube-proxy", [kube_proxy, f"--config={config}"])
        # /livez answers once the first sync of the Service rules is done (/healthz also waits
        # for the Node object, which the kubelet has not registered yet).
        livez = f"http://127.0.0.1:{self.ports.proxy_healthz}/livez"
        self._wait("kube-proxy /livez", lambda: _http_ok(livez), process, deadline)

    def _start_kubelet(self, kubelet: Path, kubeconfig: Path, deadline: float) -> None:
        assert self.ports is not None
        _create_cgroup_root()
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
            tasks = self._ctr_run("tasks", "list", "--quiet", check=False, timeout=10).stdout.split()
            if not tasks:
                return
            time.sleep(0.5)

    def _remove_containers(self) -> None:
        """Kill and delete whatever containers containerd still has (the kubelet is gone)."""
        if not any(p.alive() for p in self._named("containerd")):
            return
        for task in self._ctr_run("tasks", "list", "--quiet", check=False, timeout=10).stdout.split():
            self._ctr_run("tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=10)
        time.sleep(0.5)
        for task in self._ctr_run("tasks", "list", "--quiet", check=False, timeout=10).stdout.split():
            self._ctr_run("tasks", "delete", "--force", task, check=False, timeout=20)
        for container in self._ctr_run("containers", "list", "--quiet", check=False,
                                       timeout=10).stdout.split():
            self._ctr_run("containers", "delete", container, check=False, timeout=20)

    @staticmethod
    def _cleanup_workdir(workdir: Path, host: dict[str, Any] | None = None) -> None:
        """Undo on the host what a node with this work folder did (idempotent)."""
        host = host if host is not None else (_read_state(workdir) or {}).get("host") or {}
        socket = str(SOCKET_DIR / "containerd.sock")
        # Shims of our containerd (found by its address on their command line), then anything
        # left in the node's cgroups: no process of the node survives.
        for proc in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                argv = proc.read_bytes().split(b"\0")
                if socket.encode() in argv and b"containerd-shim" in argv[0]:
                    os.kill(int(proc.parent.name), signal.SIGKILL)
        cgroups = _cgroup_dirs()
        for _ in range(50):
            pids = _pids_in_cgroups(cgroups)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for folder in cgroups:
            _remove_cgroup_tree(folder)
        for point in [*_mounts_below(KUBELET_ROOT), *_mounts_below(workdir)]:
            _run("umount", "--lazy", point, check=False)
        shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
        for link in host.get("links", [NODE_INTERFACE, BRIDGE]):
            if _link_exists(link):
                _run("ip", "link", "delete", link, check=False)
        _remove_iptables_leftovers()
        for name, value in (host.get("sysctls") or {}).items():
            with contextlib.suppress(RealNodeError):
                if read_sysctl(name) != value:
                    write_sysctl(name, value)
        if CONTAINER_LOGS_DIR.is_dir():
            for entry in CONTAINER_LOGS_DIR.iterdir():
                with contextlib.suppress(OSError):
                    if entry.is_symlink() and os.readlink(entry).startswith(str(workdir)):
                        entry.unlink()
            if host.get("created_container_logs_dir"):
                with contextlib.suppress(OSError):
                    CONTAINER_LOGS_DIR.rmdir()
        shutil.rmtree(SOCKET_DIR, ignore_errors=True)
        if host.get("created_containerd_run_dir"):
            shutil.rmtree(CONTAINERD_RUN_DIR, ignore_errors=True)  # shim sockets, runc state
        with contextlib.suppress(FileNotFoundError):
            (workdir / STATE_FILE).unlink()


def _start_reaper(workdir: Path, owner: int) -> None:
    """A watchdog that outlives its owner: if the owner dies without stopping the node (SIGKILL,
    a crash), it stops what the kernel did not (containerd's shims and the containers run in
    sessions of their own) and puts the host back. It exits once the node stops cleanly."""
    import sys

    subprocess.Popen(
        [sys.executable, "-m", "kagent.local.realnode", "reap", str(workdir), str(owner)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def reap(workdir: Path, owner: int, poll: float = 1.0) -> bool:
    """Wait while ``owner`` lives and the node in ``workdir`` runs; clean up after an owner that
    died first. True when it cleaned up."""
    stat = _proc_stat(owner)
    owner_process = _Process("owner", owner, stat[1] if stat else None, Path())
    while (workdir / STATE_FILE).exists():
        if not owner_process.alive():
            state = _read_state(workdir) or {}
            for entry in state.get("processes", []):
                _Process(entry["name"], entry["pid"], entry.get("start_ticks"), Path()).stop(grace=2)
            RealNode._cleanup_workdir(workdir, state.get("host"))
            _HostClaim().release(workdir)
            return True
        time.sleep(poll)
    return False


def start_detached(workdir: Path, images: Sequence[Path] = ()) -> tuple[ControlPlane, RealNode]:
    """A control plane with a real node, both outliving this process (``kagent dev up
    --real-nodes``); :func:`stop_detached` stops them."""
    problem = host_problem()
    if problem is not None:
        raise RealNodeError(problem)
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


def _remove_iptables_leftovers() -> None:
    """Every ``KUBE-*`` chain (kube-proxy's and the kubelet's; refused at start if the host had
    any) and our CNI network's masquerade rules, for IPv4 and IPv6."""
    for family in ("iptables", "ip6tables"):
        save = _run(f"{family}-save", check=False).stdout
        if not save:
            continue
        chains = kube_chains(save)
        rules_to_drop: list[tuple[str, str]] = []
        table = ""
        for line in save.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith("-A ") and re.search(r"-j KUBE-|-A KUBE-", line):
                rules_to_drop.append((table, line))
        for rule in cni_masquerade_rules(save):
            rules_to_drop.append(("nat", rule))
        for table_name, rule in rules_to_drop:
            if rule.split()[1].startswith("KUBE-"):
                continue  # flushed with its chain below
            _run(family, "-t", table_name, "-D", *_split_rule(rule[3:]), check=False)
        for table_name, names in chains.items():
            for chain in names:
                _run(family, "-t", table_name, "-F", chain, check=False)
            for chain in names:
                _run(family, "-t", table_name, "-X", chain, check=False)
        # The bridge plugin's per-pod chains (CNI-…) that our masquerade rules jumped to.
        for line in _run(f"{family}-save", "-t", "nat", check=False).stdout.splitlines():
            if line.startswith(":CNI-"):
                chain = line[1:].split()[0]
                probe = _run(family, "-t", "nat", "-S", chain, check=False).stdout
                if CNI_NETWORK in probe and not _chain_referenced(family, chain):
                    _run(family, "-t", "nat", "-F", chain, check=False)
                    _run(family, "-t", "nat", "-X", chain, check=False)


def _chain_referenced(family: str, chain: str) -> bool:
    save = _run(f"{family}-save", "-t", "nat", check=False).stdout
    return any(f"-j {chain}" in line for line in save.splitlines() if line.startswith("-A "))


def _split_rule(rule: str) -> list[str]:
    import shlex

    return shlex.split(rule)


def _http_ok(url: str) -> bool:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status == 200
    finally:
        connection.close()


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        reap(Path(sys.argv[2]), int(sys.argv[3]))
