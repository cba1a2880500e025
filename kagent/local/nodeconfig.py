"""What a real node's components read: pure renderings of their configuration files and the
node's fixed names and addresses (:mod:`kagent.local.realnode` runs the components)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kagent.local import binaries as _binaries

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
SOCKET_DIR = Path("/run/kagent-node")
"""containerd's sockets: unix socket paths must stay short, work folders need not."""
KUBELET_ROOT = Path("/var/lib/kagent-node")
"""The kubelet's root folder (pod volumes, its plugin sockets): socket paths below it must stay
short, so it cannot live in an arbitrary work folder."""


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
