"""Run the Kagent controller as a separate process against a control plane, the way it runs in
a cluster: its own process, its own leader Lease, the webhook served over TLS on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from kagent.api.labels import (
    AGENT_AUTH_CLUSTER_ROLE,
    CLI_ACCOUNT,
    CONTROLLER_NAMESPACE,
    LEASE_NAME,
    LOCAL_CONTROLLER_ACCOUNT,
    WEBHOOK_CONFIGURATION_NAME,
)
from kagent.local.controlplane import ControlPlane
from kagent.local.process import Process, tail
from kagent.local.services import free_port

__all__ = ["ControllerProcess", "free_port", "remove_webhook_configurations"]

CONTROLLER_ACCOUNT = LOCAL_CONTROLLER_ACCOUNT
CONTROLLER_INVOKE_BINDING = f"{LOCAL_CONTROLLER_ACCOUNT}-invoke"
CONTROLLER_RUNS_BINDING = f"{LOCAL_CONTROLLER_ACCOUNT}-runs"


def controller_identity_yaml(namespace: str = CONTROLLER_NAMESPACE) -> str:
    """What the chart grants for agent authentication, for a controller run as a process: its
    ServiceAccount with ``invoke`` on every Agent (the workflow engine calls agents as it) and
    ``update`` on ``workflowruns/status`` (so agents believe its steps' workflow header), and
    the agent-auth ClusterRole the controller binds each agent's ServiceAccount to. Local
    environments only: ``kagent-cli``, the account the CLI calls agents as for a client-
    certificate user, may invoke every Agent too."""
    rbac = "rbac.authorization.k8s.io/v1"
    docs = [
        *({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": account, "namespace": namespace}}
          for account in (CONTROLLER_ACCOUNT, CLI_ACCOUNT)),
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": CONTROLLER_INVOKE_BINDING},
         "rules": [{"apiGroups": ["kagent.dev"], "resources": ["agents"], "verbs": ["invoke"]}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": CONTROLLER_INVOKE_BINDING},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": CONTROLLER_INVOKE_BINDING},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}
                      for account in (CONTROLLER_ACCOUNT, CLI_ACCOUNT)]},
        # The workflow engine says which Workflow a step belongs to; agents believe that only
        # from a caller that may write run status, as the chart's controller may.
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": CONTROLLER_RUNS_BINDING},
         "rules": [{"apiGroups": ["kagent.dev"], "resources": ["workflowruns/status"],
                    "verbs": ["update"]}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": CONTROLLER_RUNS_BINDING},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": CONTROLLER_RUNS_BINDING},
         "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_ACCOUNT,
                       "namespace": namespace}]},
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": AGENT_AUTH_CLUSTER_ROLE},
         "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                    "verbs": ["create"]},
                   {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                    "verbs": ["create"]}]},
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


class ControllerProcess:
    def __init__(
        self,
        plane: ControlPlane,
        *,
        identity: str = "controller-0",
        lease_seconds: int = 4,
        webhook: bool = True,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        detached: bool = False,
    ) -> None:
        """``detached``: the process outlives this one (``kagent dev``); otherwise the kernel
        stops it if this process dies without stopping it."""
        self.plane = plane
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.webhook = webhook
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        self.log_file = (log_dir or plane.workdir) / f"controller-{identity}.log"
        self.extra_args = extra_args or []
        self.env = env or {}
        self.detached = detached
        self.process: Process | None = None

    def command(self) -> list[str]:
        args = [
            sys.executable, "-m", "kagent", "controller",
            "--kubeconfig", str(self.plane.kubeconfig),
            "--namespace", CONTROLLER_NAMESPACE,
            "--identity", self.identity,
            "--lease-seconds", str(self.lease_seconds),
            "--metrics-port", str(self.metrics_port),
            "--image", "kagent:test",
        ]
        if self.webhook:
            args += ["--webhook-host", "127.0.0.1", "--webhook-listen", "127.0.0.1",
                     "--webhook-port", str(self.webhook_port)]
        else:
            args.append("--no-webhook")
        return args + self.extra_args

    def start(self, wait: bool = True, timeout: float = 60.0) -> ControllerProcess:
        self.plane.create_namespace(CONTROLLER_NAMESPACE)
        self.plane.apply_yaml(controller_identity_yaml())
        identity = {"KAGENT_CONTROLLER_SERVICE_ACCOUNT": f"{CONTROLLER_NAMESPACE}/{CONTROLLER_ACCOUNT}"}
        self.process = Process.start(
            self.command(), name=f"the controller {self.identity}", log_file=self.log_file,
            append_log=True, env={**os.environ, **identity, **self.env},
            die_with_parent=not self.detached)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /metrics answers and, with the webhook, the webhook port accepts TLS and the
        webhook configuration points at it. Raises :class:`~kagent.local.process.ProcessExited`
        (a RuntimeError) if the controller exits, a TimeoutError if it is not ready in time."""
        if self.process is None:
            raise RuntimeError("the controller has not been started")
        ports = [self.metrics_port] + ([self.webhook_port] if self.webhook else [])

        def ready() -> bool:
            return all(_accepts(port) for port in ports) and (
                not self.webhook or self._webhook_registered())

        what = "/metrics" + (" and the webhook" if self.webhook else "")
        self.process.wait_ready(ready, timeout=timeout, what=what)

    def _webhook_registered(self) -> bool:
        result = self.plane.kubectl("get", "validatingwebhookconfiguration",
                                    WEBHOOK_CONFIGURATION_NAME, "-o",
                                    "jsonpath={.webhooks[0].clientConfig.url}", check=False)
        return f":{self.webhook_port}/" in result.stdout

    def is_leader(self) -> bool:
        result = self.plane.kubectl("get", "lease", LEASE_NAME, "-n", CONTROLLER_NAMESPACE,
                                    "-o", "jsonpath={.spec.holderIdentity}", check=False)
        return result.stdout.strip() == self.identity

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
            return rsp.read().decode()

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_file, lines) if self.log_file.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the controller gets no chance to clean up (a crash)."""
        if self.process is not None:
            self.process.kill(kill_wait=10)

    def stop(self) -> None:
        """SIGTERM, 15 s to shut down cleanly, then SIGKILL."""
        if self.process is not None:
            self.process.stop(grace=15)

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def remove_webhook_configurations(plane: ControlPlane) -> None:
    """A stopped controller's webhook would refuse every Kagent object; remove its registration."""
    plane.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                  WEBHOOK_CONFIGURATION_NAME,
                  "--ignore-not-found", check=False)
