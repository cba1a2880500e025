"""What a real node does to the host, and how it is undone: sysctls, interfaces, iptables,
cgroups, mounts, the processes of a node, and the claim that one node runs per machine.

Every change is recorded before it is made (:class:`kagent.local.realnode.RealNode` keeps the
record in its state file) so :func:`restore_host` can put the host back, also after an owner that
died (the next start, or the node's reaper, calls it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kagent.local import binaries as _binaries
from kagent.local.nodeconfig import (
    BRIDGE,
    CGROUP_ROOT,
    CNI_NETWORK,
    KUBELET_ROOT,
    NODE_INTERFACE,
    SOCKET_DIR,
)
from kagent.local.process import Process

CONTAINER_LOGS_DIR = Path("/var/log/containers")
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


class RealNodeError(RuntimeError):
    """The real node cannot start here, or failed to; the message says what and why."""


def run(*argv: str | Path, check: bool = True, timeout: float = 60.0,
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


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def mounts_below(folder: Path) -> list[str]:
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


def cgroup_dirs() -> list[Path]:
    """Our cgroup folder in every hierarchy where it exists."""
    return [mount / CGROUP_ROOT for mount in _cgroup_mounts() if (mount / CGROUP_ROOT).is_dir()]


def create_cgroup_root() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset needs the CPUs and
    memory nodes of its parent before anything can join it."""
    for mount in _cgroup_mounts():
        folder = mount / CGROUP_ROOT
        folder.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (mount / setting).exists() and not (folder / setting).read_text().strip():
                (folder / setting).write_text((mount / setting).read_text())


def pids_in_cgroups(folders: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for folder in folders:
        for procs in folder.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup_tree(folder: Path) -> None:
    for child in sorted((p for p in folder.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def recorded_process(entry: dict[str, Any]) -> Process:
    """A handle on a node process recorded in the state file (its start time guards against a
    reused pid)."""
    log_file = entry.get("log_file")
    return Process.attach(entry["pid"], name=entry["name"], start_ticks=entry.get("start_ticks"),
                          log_file=Path(log_file) if log_file else None)


def require_host() -> tuple[Path, Path, Path, Path, Path]:
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
        run("modprobe", "br_netfilter", check=False)
        if read_sysctl("net.bridge.bridge-nf-call-iptables") is None:
            raise RealNodeError("a real node needs the br_netfilter kernel module "
                                "(Services between pods on one bridge go through iptables)")
    return found["containerd"], found["ctr"], found["runc"], cni_dir, found["iptables"]


def host_problem() -> str | None:
    """Why a real node cannot run on this machine (not root, a tool or kernel feature missing),
    or None: what a test tier skips on, naming the reason."""
    try:
        require_host()
    except RealNodeError as error:
        return str(error)
    return None


class HostClaim:
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
                state = read_state(previous)
                if state and any(recorded_process(p).alive() for p in state.get("processes", [])):
                    raise RealNodeError(f"a real node already runs on this machine (work folder "
                                        f"{previous}); stop it first")
            self.path.write_text(json.dumps({"workdir": str(workdir), "pid": os.getpid()}))
            return previous if previous != workdir else None

    def release(self, workdir: Path) -> None:
        with self._locked(), contextlib.suppress(OSError, ValueError):
            if Path(json.loads(self.path.read_text())["workdir"]) == workdir:
                self.path.unlink()


def read_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


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


def restore_host(workdir: Path, host: dict[str, Any] | None = None) -> None:
    """Undo on the host what a node with this work folder did (idempotent)."""
    host = host if host is not None else (read_state(workdir) or {}).get("host") or {}
    socket = str(SOCKET_DIR / "containerd.sock")
    # Shims of our containerd (found by its address on their command line), then anything
    # left in the node's cgroups: no process of the node survives.
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ValueError):
            argv = proc.read_bytes().split(b"\0")
            if socket.encode() in argv and b"containerd-shim" in argv[0]:
                os.kill(int(proc.parent.name), signal.SIGKILL)
    cgroups = cgroup_dirs()
    for _ in range(50):
        pids = pids_in_cgroups(cgroups)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for folder in cgroups:
        remove_cgroup_tree(folder)
    for point in [*mounts_below(KUBELET_ROOT), *mounts_below(workdir)]:
        run("umount", "--lazy", point, check=False)
    shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
    for link in host.get("links", [NODE_INTERFACE, BRIDGE]):
        if link_exists(link):
            run("ip", "link", "delete", link, check=False)
    remove_iptables_leftovers()
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


def remove_iptables_leftovers() -> None:
    """Every ``KUBE-*`` chain (kube-proxy's and the kubelet's; refused at start if the host had
    any) and our CNI network's masquerade rules, for IPv4 and IPv6."""
    for family in ("iptables", "ip6tables"):
        save = run(f"{family}-save", check=False).stdout
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
            run(family, "-t", table_name, "-D", *shlex.split(rule[3:]), check=False)
        for table_name, names in chains.items():
            for chain in names:
                run(family, "-t", table_name, "-F", chain, check=False)
            for chain in names:
                run(family, "-t", table_name, "-X", chain, check=False)
        # The bridge plugin's per-pod chains (CNI-…) that our masquerade rules jumped to.
        for line in run(f"{family}-save", "-t", "nat", check=False).stdout.splitlines():
            if line.startswith(":CNI-"):
                chain = line[1:].split()[0]
                probe = run(family, "-t", "nat", "-S", chain, check=False).stdout
                if CNI_NETWORK in probe and not _chain_referenced(family, chain):
                    run(family, "-t", "nat", "-F", chain, check=False)
                    run(family, "-t", "nat", "-X", chain, check=False)


def _chain_referenced(family: str, chain: str) -> bool:
    save = run(f"{family}-save", "-t", "nat", check=False).stdout
    return any(f"-j {chain}" in line for line in save.splitlines() if line.startswith("-A "))
