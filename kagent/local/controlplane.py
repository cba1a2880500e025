"""A real Kubernetes control plane on loopback, for tests and for ``kagent dev up``.

It is what controller-runtime's envtest starts (etcd and kube-apiserver with client-certificate
auth and RBAC) plus what envtest leaves out and our operator needs to be tested honestly:
kube-controller-manager (Deployments, ReplicaSets, garbage collection, service accounts),
kube-scheduler, and kwok, which plays the kubelet of a fake node so pods really become Running
and Ready. Every process listens on 127.0.0.1 on free ports, so several control planes can run side
by side.

Each component runs in its own process group and logs to ``<workdir>/<component>/<component>.log``;
a startup failure reports the tail of the log that explains it. A control plane started by this
process is stopped when the interpreter exits (``atexit``), and on Linux its processes are killed by
the kernel if the interpreter dies without running it. A *detached* control plane outlives its
parent; its pids are kept in ``<workdir>/state.json`` so :meth:`ControlPlane.stop_detached` can stop
it later from another process.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import copy
import http.client
import importlib.resources
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from kagent.api.labels import AGENT_LABEL, LOCAL_READY_ANNOTATION
from kagent.kube.certs import (
    CertificateFiles,
    SigningKeyPair,
    load_ca,
    make_ca,
    make_client_cert,
    make_serving_cert,
    make_signing_key_pair,
)
from kagent.local import binaries as _binaries
from kagent.local.process import Process, ProcessError, stop_all, wait_until_ready

NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
NODE_IP = "10.250.0.10"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
STATE_FILE = "state.json"
STATE_VERSION = 1

# In-cluster names of the API server; the serving certificate carries them so a client that
# reaches it through the `kubernetes` Service would also verify it.
_APISERVER_HOSTS = (
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_STOP_GRACE_SECONDS = 10.0
_KILL_WAIT_SECONDS = 5.0


class ControlPlaneError(RuntimeError):
    """The control plane failed to start, or was used in a state that does not allow it."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        # Skip the binary, --kubeconfig and --cache-dir: they are the same for every call.
        command = " ".join(str(part) for part in self.cmd[3:])
        return f"kubectl {command} exited with {self.returncode}:\n{self.stderr}"


@dataclass(frozen=True)
class Ports:
    """The loopback ports one control plane listens on."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay open until every port is chosen."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- stopping everything at exit -------------------------------------------------------------
_running: set[ControlPlane] = set()
_running_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _running_lock:
        planes = list(_running)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


atexit.register(_stop_all_at_exit)


class _Api:
    """Minimal JSON-over-HTTPS calls to the API server as the admin user."""

    def __init__(self, port: int, ca_file: Path, client: CertificateFiles) -> None:
        self._port = port
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.load_cert_chain(str(client.cert_file), str(client.key_file))

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._context, timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")


def _https_ok(port: int, path: str, ca_file: Path, timeout: float = 2.0) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    finally:
        connection.close()


def _http_json(port: int, path: str, timeout: float = 2.0) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    finally:
        connection.close()


def kwok_stages(*, local_agent_pods: bool = False) -> str:
    """kwok's stages; with ``local_agent_pods`` an agent pod's ready stage waits until the local
    process that realises it (``kagent.local.localpods``) has set its ready annotation."""
    text = importlib.resources.files("kagent.local").joinpath("kwok_stages.yaml").read_text()
    if not local_agent_pods:
        return text
    documents = [d for d in yaml.safe_load_all(text) if d]
    ready = next(d for d in documents if d["metadata"]["name"] == "pod-ready")
    local = copy.deepcopy(ready)
    local["metadata"]["name"] = "pod-ready-local-agent"
    label = f'.metadata.labels["{AGENT_LABEL}"]'
    ready["spec"]["selector"]["matchExpressions"].append(
        {"key": label, "operator": "DoesNotExist"})
    local["spec"]["selector"]["matchExpressions"] += [
        {"key": label, "operator": "Exists"},
        {"key": f'.metadata.annotations["{LOCAL_READY_ANNOTATION}"]', "operator": "In",
         "values": ["true"]},
    ]
    documents.append(local)
    return yaml.safe_dump_all(documents, sort_keys=False, width=10_000)


def fake_node(name: str = NODE_NAME, *, ip: str = NODE_IP) -> dict[str, Any]:
    """A Node kwok will manage: big enough for any test, untainted so pods need no tolerations."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. With no ``workdir`` it
    lives in a temporary folder removed by :meth:`stop`; with one, the certificates and etcd data
    are kept there and reused by the next start. ``detached=True`` (which needs a ``workdir``)
    leaves the processes running after this interpreter exits.
    """

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        extra_apiserver_args: Sequence[str] = (),
        detached: bool = False,
        binaries: _binaries.ControlPlaneBinaries | None = None,
        startup_timeout: float = 120.0,
        node_name: str = NODE_NAME,
        local_agent_pods: bool = False,
    ) -> None:
        if detached and workdir is None:
            raise ValueError("a detached control plane needs a persistent workdir")
        self._workdir = Path(workdir).absolute() if workdir is not None else None
        self._owns_workdir = workdir is None
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.node_name = node_name
        self.local_agent_pods = local_agent_pods
        """Agent pods become Ready only when their local process is (``kagent dev``)."""
        self._binaries = binaries
        self._components: list[Process] = []
        self._ports: Ports | None = None
        self._api: _Api | None = None
        self._started = False
        self.startup_seconds: float | None = None
        self._stop_hooks: list[Callable[[], None]] = []

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` first thing in :meth:`stop`, while the API server still answers (a real
        node drains its pods there: :mod:`kagent.local.realnode`)."""
        self._stop_hooks.append(hook)

    def remove_stop_hook(self, hook: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._stop_hooks.remove(hook)

    # --- where things are ----------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._workdir

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._ports

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig (user ``kagent-admin`` in group ``system:masters``)."""
        return self.workdir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the API server's certificate and every client certificate."""
        return self.pki_dir / "ca.crt"

    @property
    def client_cert_file(self) -> Path:
        return self.pki_dir / "admin.crt"

    @property
    def client_key_file(self) -> Path:
        return self.pki_dir / "admin.key"

    @property
    def pids(self) -> dict[str, int]:
        return {component.name: component.pid for component in self._components}

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    def __repr__(self) -> str:
        where = self._workdir or "not started"
        return f"<ControlPlane {where} {'running' if self._components else 'stopped'}>"

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start every component and wait until a Deployment could roll out: the API server is
        ready, the fake node is Ready and untainted, and ``default/default`` ServiceAccount exists.

        Whatever was started is stopped again if this fails or is interrupted half-way.
        """
        if self._components or self._started:
            raise ControlPlaneError("this control plane is already running")
        binaries = self._binaries or _binaries.control_plane_binaries()  # may build them first
        began = time.monotonic()
        deadline = began + self.startup_timeout
        if self._owns_workdir:
            self._workdir = Path(tempfile.mkdtemp(prefix="kagent-cp-"))
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self.state_file.exists():
                previous = ControlPlane.attach(self.workdir)
                if previous.is_running():
                    raise ControlPlaneError(f"a control plane is already running in {self.workdir}")
                previous.stop()  # leftovers of one that died half-way
        self._started = True
        with _running_lock:
            _running.add(self)
        try:
            self._start_components(binaries, deadline)
        except BaseException:
            self.stop()
            raise
        if self.detached:
            with _running_lock:
                _running.discard(self)
        self.startup_seconds = time.monotonic() - began
        self._write_state()
        return self

    def stop(self) -> None:
        """Terminate every component (SIGTERM, then SIGKILL after a grace period), forget the
        state file and remove the temporary workdir."""
        for hook in list(reversed(self._stop_hooks)):
            try:
                hook()
            except Exception as error:  # noqa: BLE001 - the components must stop regardless
                print(f"[kagent.testing] stop hook {hook!r} failed: {error}", file=sys.stderr)
        components, self._components = self._components, []
        _terminate(components)
        with _running_lock:
            _running.discard(self)
        if self._workdir is not None:
            if self._owns_workdir:
                shutil.rmtree(self._workdir, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.state_file.unlink()
        self._started = False
        self._api = None

    def is_running(self) -> bool:
        """True while every component process is alive."""
        return bool(self._components) and all(c.alive() for c in self._components)

    @classmethod
    def attach(cls, workdir: Path | str) -> ControlPlane:
        """A handle on the control plane recorded in ``workdir``'s state file, e.g. a detached one
        started by another process. Its :meth:`stop` stops those processes."""
        workdir = Path(workdir).absolute()
        try:
            state = json.loads((workdir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise ControlPlaneError(f"no control plane state in {workdir}") from None
        if state.get("version") != STATE_VERSION:
            raise ControlPlaneError(f"{workdir / STATE_FILE}: unknown state version")
        plane = cls(workdir=workdir, detached=True)
        plane._ports = Ports(**state["ports"])
        plane._components = [
            Process.attach(
                c["pid"],
                name=c["name"],
                log_file=Path(c["log_file"]),
                start_ticks=c.get("start_ticks"),
            )
            for c in state["components"]
        ]
        plane._started = True
        plane.startup_seconds = state.get("startup_seconds")
        return plane

    @classmethod
    def stop_detached(cls, workdir: Path | str) -> bool:
        """Stop the control plane recorded in ``workdir``; False when none is recorded there."""
        try:
            plane = cls.attach(workdir)
        except ControlPlaneError:
            return False
        plane.stop()
        return True

    # --- using it ------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float | None = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane as admin; raises :class:`KubectlError` on
        failure when ``check``."""
        command = [
            str(_binaries.kubectl()),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def apply_yaml(
        self, text: str, *, namespace: str | None = None, server_side: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` one or more YAML documents."""
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["--namespace", namespace]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        return self.kubectl(*args, input=text)

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> str:
        """Create a namespace (an existing one is fine) and return its name."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            body["metadata"]["labels"] = labels
        status, response = self._admin_api().request("POST", "/api/v1/namespaces", body)
        if status not in (201, 409):
            raise ControlPlaneError(f"creating namespace {name} failed ({status}): {response}")
        return name

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace; does not wait for its finalization."""
        status, response = self._admin_api().request(
            "DELETE", f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"}
        )
        if status not in (200, 202, 404):
            raise ControlPlaneError(f"deleting namespace {name} failed ({status}): {response}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One raw API call as admin: ``(status, decoded JSON body)``."""
        return self._admin_api().request(method, path, body)

    # --- internals -----------------------------------------------------------------------------

    def _admin_api(self) -> _Api:
        if self._api is None:
            self._api = _Api(
                self.ports.apiserver,
                self.ca_file,
                CertificateFiles(self.client_cert_file, self.client_key_file),
            )
        return self._api

    def _choose_ports(self) -> Ports:
        previous = self.workdir / "ports.json"
        if not self._owns_workdir and previous.exists():
            with contextlib.suppress(ValueError, TypeError):
                ports = Ports(**json.loads(previous.read_text()))
                if all(_port_is_free(p) for p in asdict(ports).values()):
                    return ports  # the same ports as last time keep the server URL stable
        ports = Ports(*_free_ports(5))
        previous.write_text(json.dumps(asdict(ports)))
        return ports

    def _prepare_pki(self) -> tuple[CertificateFiles, SigningKeyPair]:
        pki = self.pki_dir
        serving = CertificateFiles(pki / "apiserver.crt", pki / "apiserver.key")
        admin = CertificateFiles(self.client_cert_file, self.client_key_file)
        signing = SigningKeyPair(pki / "sa.key", pki / "sa.pub")
        files = [
            self.ca_file,
            pki / "ca.key",
            serving.cert_file,
            serving.key_file,
            admin.cert_file,
            admin.key_file,
            signing.private_key_file,
            signing.public_key_file,
        ]
        if all(f.exists() for f in files):
            load_ca(self.ca_file, pki / "ca.key")  # fail early on a damaged CA
            return serving, signing
        ca = make_ca(pki, common_name="kagent-control-plane-ca")
        make_serving_cert(
            ca, pki, hosts=_APISERVER_HOSTS, name="apiserver", common_name="kube-apiserver"
        )
        make_client_cert(
            ca, pki, common_name="kagent-admin", groups=["system:masters"], name="admin"
        )
        make_signing_key_pair(pki, name="sa")
        return serving, signing

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kagent",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_file),
                    },
                }
            ],
            "users": [
                {
                    "name": "kagent-admin",
                    "user": {
                        "client-certificate-data": _b64(self.client_cert_file),
                        "client-key-data": _b64(self.client_key_file),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kagent",
                    "context": {
                        "cluster": "kagent",
                        "user": "kagent-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "kagent",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        component = Process.start(
            args,
            name=name,
            log_file=directory / f"{name}.log",
            cwd=directory,
            env={**os.environ, **(env or {})},
            die_with_parent=not self.detached,
        )
        self._components.append(component)
        self._write_state()
        return component

    def _write_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "detached": self.detached,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": asdict(self.ports),
            "startup_seconds": self.startup_seconds,
            "components": [
                {
                    "name": c.name,
                    "pid": c.pid,
                    "start_ticks": c.start_ticks,
                    "log_file": str(c.log_file),
                }
                for c in self._components
            ],
        }
        partial = self.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)

    def _start_components(
        self, binaries: _binaries.ControlPlaneBinaries, deadline: float
    ) -> None:
        self._ports = ports = self._choose_ports()
        serving, signing = self._prepare_pki()
        self._write_kubeconfig()
        admin_kubeconfig = str(self.kubeconfig)
        ca_file, ca_key = str(self.ca_file), str(self.pki_dir / "ca.key")

        etcd_data = self.workdir / "etcd" / "data"
        etcd_client = f"http://127.0.0.1:{ports.etcd_client}"
        etcd_peer = f"http://127.0.0.1:{ports.etcd_peer}"
        etcd_args = [
            str(binaries.etcd),
            "--name=default",
            f"--data-dir={etcd_data}",
            f"--listen-client-urls={etcd_client}",
            f"--advertise-client-urls={etcd_client}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=default={etcd_peer}",
            "--log-level=warn",
        ]
        if self._owns_workdir:
            etcd_args.append("--unsafe-no-fsync=true")  # throwaway data: speed over durability
        etcd = self._spawn("etcd", etcd_args)
        self._wait_for(
            {"etcd /health": lambda: _etcd_healthy(ports.etcd_client)},
            {"etcd /health": etcd},
            deadline,
        )

        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                f"--cert-dir={self.workdir / 'kube-apiserver'}",
                f"--tls-cert-file={serving.cert_file}",
                f"--tls-private-key-file={serving.key_file}",
                f"--client-ca-file={ca_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={signing.public_key_file}",
                f"--service-account-signing-key-file={signing.private_key_file}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                *self.extra_apiserver_args,
            ],
        )
        api = self._admin_api()
        self._wait_for(
            {"kube-apiserver /readyz": lambda: api.request("GET", "/readyz")[0] == 200},
            {"kube-apiserver /readyz": apiserver},
            deadline,
            also_watch=[etcd],
        )

        serving_flags = [
            "--bind-address=127.0.0.1",
            f"--tls-cert-file={serving.cert_file}",
            f"--tls-private-key-file={serving.key_file}",
        ]
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={admin_kubeconfig}",
                f"--secure-port={ports.controller_manager}",
                *serving_flags,
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={signing.private_key_file}",
                f"--root-ca-file={ca_file}",
                f"--cluster-signing-cert-file={ca_file}",
                f"--cluster-signing-key-file={ca_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        scheduler_dir = self.workdir / "kube-scheduler"
        scheduler_dir.mkdir(parents=True, exist_ok=True)
        scheduler_config = scheduler_dir / "config.yaml"
        scheduler_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": admin_kubeconfig, "qps": 200, "burst": 400},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--config={scheduler_config}",
                f"--secure-port={ports.scheduler}",
                *serving_flags,
            ],
        )
        kwok_dir = self.workdir / "kwok"
        kwok_dir.mkdir(parents=True, exist_ok=True)
        stages = kwok_dir / "stages.yaml"
        stages.write_text(kwok_stages(local_agent_pods=self.local_agent_pods))
        kwok = self._spawn(
            "kwok",
            [
                str(binaries.kwok),
                f"--kubeconfig={admin_kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--manage-nodes-with-label-selector=",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
            ],
            # kwok reads ~/.kwok/kwok.yaml when it exists; point it at our own folder instead.
            env={"KWOK_WORKDIR": str(kwok_dir)},
        )

        status, response = api.request("POST", "/api/v1/nodes", fake_node(self.node_name))
        if status not in (201, 409):
            raise ControlPlaneError(f"creating node {self.node_name} failed ({status}): {response}")

        self._wait_for(
            {
                f"node {self.node_name} Ready and untainted": lambda: self._node_schedulable(),
                "ServiceAccount default/default": lambda: api.request(
                    "GET", "/api/v1/namespaces/default/serviceaccounts/default"
                )[0]
                == 200,
                "kube-scheduler /healthz": lambda: _https_ok(
                    ports.scheduler, "/healthz", self.ca_file
                ),
                "kube-controller-manager /healthz": lambda: _https_ok(
                    ports.controller_manager, "/healthz", self.ca_file
                ),
            },
            {
                f"node {self.node_name} Ready and untainted": kwok,
                "ServiceAccount default/default": controller_manager,
                "kube-scheduler /healthz": scheduler,
                "kube-controller-manager /healthz": controller_manager,
            },
            deadline,
            also_watch=[etcd, apiserver],
        )

    def _node_schedulable(self) -> bool:
        status, node = self._admin_api().request("GET", f"/api/v1/nodes/{self.node_name}")
        if status != 200:
            return False
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        return ready and not node.get("spec", {}).get("taints")

    def _wait_for(
        self,
        checks: dict[str, Callable[[], bool]],
        owners: dict[str, Process],
        deadline: float,
        also_watch: Iterable[Process] = (),
    ) -> None:
        """Poll ``checks`` until all pass; fail fast if a process dies, with its log tail."""
        try:
            wait_until_ready(checks, watch=[*owners.values(), *also_watch], owners=owners,
                             timeout=self.startup_timeout, deadline=deadline)
        except ProcessError as error:
            raise ControlPlaneError(str(error)) from None


def _etcd_healthy(port: int) -> bool:
    health = _http_json(port, "/health")
    return isinstance(health, dict) and health.get("health") == "true"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _terminate(components: Sequence[Process]) -> None:
    """Stop the API server's clients, then the API server, then etcd.

    Each tier gets SIGTERM to its process groups and a grace period, then SIGKILL. The order
    matters for speed: an API server whose etcd is gone retries for a long time before exiting,
    and etcd waits for its clients to disconnect.
    """
    storage = ("kube-apiserver", "etcd")
    tiers = [
        [c for c in components if c.name not in storage],
        [c for c in components if c.name == "kube-apiserver"],
        [c for c in components if c.name == "etcd"],
    ]
    for tier in tiers:
        if not stop_all(tier, grace=_STOP_GRACE_SECONDS, kill_wait=_KILL_WAIT_SECONDS):
            survivors = ", ".join(f"{c.name} (pid {c.pid})" for c in tier if c.group_alive())
            print(f"[kagent.local] could not stop: {survivors}", file=sys.stderr)


def install_crds(plane: ControlPlane) -> None:
    """Kagent's CRDs into this control plane, Established (see :mod:`kagent.kube.crds`)."""
    from kagent.kube import sync_client
    from kagent.kube.crds import apply_crds

    apply_crds(sync_client(plane.kubeconfig))
