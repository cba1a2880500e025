"""The controller process: kopf watches, our work queue, leader election, webhook, metrics.

kopf delivers watch events; every event only *queues a key* (level-based, as controller-runtime
does). The leader's workers reconcile keys; a change to a Tool, Memory, Secret or Agent queues
exactly the objects that depend on it (see :class:`DependencyIndex`). Every replica serves the
admission webhook; only the leader reconciles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from prometheus_client import start_http_server

from kagent.api import KIND_BY_NAME
from kagent.api.base import GROUP, VERSION
from kagent.controller.agents import reconcile_agent
from kagent.kube.events import post_event
from kagent.controller.index import DependencyIndex, ObjectKey
from kagent.controller.leader import LeaderElector
from kagent.controller.mcp_discovery import mcp_discoverer
from kagent.controller.queue import WorkQueue
from kagent.controller.references import McpDiscovery, reconcile_references
from kagent.controller.render import AGENT_LABEL, DEFAULT_IMAGE
from kagent.controller.workflows import WorkflowReconciler
from kagent.kube import KAGENT_RESOURCES, ScaledObject, async_client, is_not_found
from kagent.controller.metrics import (
    IS_LEADER,
    QUEUE_DEPTH,
    RECONCILE_DURATION,
    RECONCILE_ERRORS,
    RECONCILES,
)
from kagent.webhook.server import (
    CONFIGURATION_NAME,
    ServiceWebhookServer,
    ensure_ca,
    inject_ca_bundle,
    register_webhooks,
)

log = logging.getLogger("kagent.controller")

RECONCILED_KINDS = ("Agent", "Tool", "Memory", "Workflow", "WorkflowRun")
WORKFLOW_KINDS = ("Workflow", "WorkflowRun")


@dataclass
class WebhookSettings:
    port: int = 9443
    listen: str = "0.0.0.0"
    host: str | None = None
    """URL host the apiserver uses (dev mode: 127.0.0.1). None: reach it through the Service."""
    service_name: str = "kagent-webhook"
    service_port: int = 443
    manage_configuration: bool = True
    """Create the webhook configurations and inject the caBundle (off when cert-manager does)."""
    cert_dir: Path | None = None
    """Serving certificate from here (tls.crt, tls.key, ca.crt) instead of the managed CA."""


@dataclass
class ControllerSettings:
    namespace: str = "kagent-system"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    image: str = DEFAULT_IMAGE
    workers: int = 8
    resync_seconds: float = 300.0
    metrics_port: int | None = 8080
    kubeconfig: Path | None = None
    webhook: WebhookSettings | None = field(default_factory=WebhookSettings)
    lease_seconds: int = 15


class Controller:
    """Reconciles queued keys; holds the index and cluster facts (is KEDA installed?)."""

    def __init__(self, client: AsyncClient, settings: ControllerSettings,
                 discover_mcp: McpDiscovery | None = None) -> None:
        self.client = client
        self.settings = settings
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.index = DependencyIndex()
        self.discover_mcp = discover_mcp
        self._keda: tuple[float, bool] | None = None
        self.known: set[ObjectKey] = set()
        self.workflows = WorkflowReconciler(client, self.index, self.enqueue)

    # --- queueing ---------------------------------------------------------------------------

    def enqueue(self, key: ObjectKey) -> None:
        self.queue.add(key)
        QUEUE_DEPTH.set(len(self.queue))

    def enqueue_dependents(self, key: ObjectKey) -> None:
        for dependent in self.index.dependents(key):
            self.enqueue(dependent)

    def on_event(self, kind: str, event_type: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        if event_type == "DELETED":
            self.known.discard(key)
            self.index.forget(key)
            if kind == "WorkflowRun":
                self.workflows.deleted(namespace, name)
        elif kind in RECONCILED_KINDS:
            self.known.add(key)
        if kind in RECONCILED_KINDS and event_type != "DELETED":
            self.enqueue(key)
        self.enqueue_dependents(key)

    # --- cluster facts ----------------------------------------------------------------------

    async def keda_available(self) -> bool:
        """Whether KEDA's ScaledObject API is served (cached for a minute)."""
        now = time.monotonic()
        if self._keda is not None and now - self._keda[0] < 60:
            return self._keda[1]
        try:
            async for _ in self.client.list(ScaledObject, namespace="default", chunk_size=1):
                break
            available = True
        except Exception as error:
            if not is_not_found(error):
                raise
            available = False
        self._keda = (now, available)
        return available

    def keda_changed(self) -> None:
        """KEDA was installed or removed: every Agent's autoscaler may change."""
        self._keda = None
        for key in list(self.known):
            if key[0] == "Agent":
                self.enqueue(key)

    # --- reconciling ------------------------------------------------------------------------

    async def handle(self, key: ObjectKey) -> float | None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            if kind in WORKFLOW_KINDS:
                result = await self.workflows.handle(kind, namespace, name)
            elif kind == "Agent":
                outcome = await reconcile_agent(
                    self.client, namespace, name, await self.keda_available(), self.settings.image
                )
                if outcome is None:
                    self.index.forget(key)
                    result = None
                else:
                    self.index.record(key, outcome.dependencies)
                    await self._post_transitions(kind, namespace, name, outcome.transitions)
                    result = outcome.requeue_after
            else:
                found = await reconcile_references(self.client, kind, namespace, name, self.discover_mcp)
                if found is None:
                    self.index.forget(key)
                    result = None
                else:
                    dependencies, transitions, result = found
                    self.index.record(key, dependencies)
                    await self._post_transitions(kind, namespace, name, transitions)
        except Exception:
            RECONCILE_ERRORS.labels(kind).inc()
            RECONCILES.labels(kind, "error").inc()
            log.exception("reconciling %s %s/%s failed; will retry", kind, namespace, name)
            raise
        finally:
            RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)
            QUEUE_DEPTH.set(len(self.queue))
        RECONCILES.labels(kind, "success").inc()
        return self.settings.resync_seconds if result is None else min(result, self.settings.resync_seconds)

    async def _post_transitions(
        self, kind: str, namespace: str, name: str, transitions: list[tuple[str, str, str, str]]
    ) -> None:
        if not transitions:
            return
        try:
            raw = (await self.client.get(KAGENT_RESOURCES[kind], name, namespace=namespace)).to_dict()
        except ApiError:
            return
        for cond_type, status, reason, message in transitions:
            event_type = "Normal" if status == "True" else "Warning"
            await post_event(self.client, raw, event_type, reason, f"{cond_type}={status}: {message}")

    async def lead(self) -> None:
        """Run as the leader: reconcile everything once, then whatever the watches queue."""
        IS_LEADER.set(1)
        try:
            for attempt in range(1, 1000):
                try:
                    await self.resync_all()
                    break
                except ApiError as error:  # e.g. 429 while the apiserver's storage initialises
                    log.warning("listing objects failed (%s); retrying", error)
                    await asyncio.sleep(min(attempt, 10))
            await self.queue.run(self.handle, self.settings.workers)
        finally:
            IS_LEADER.set(0)
            await self.workflows.shutdown()

    async def resync_all(self) -> None:
        for kind in RECONCILED_KINDS:
            async for obj in self.client.list(KAGENT_RESOURCES[kind], namespace="*"):
                meta = obj.metadata
                self.on_event(kind, "ADDED", str(meta.namespace), str(meta.name))


def build_registry(controller: Controller, with_webhooks: bool) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    for kind in RECONCILED_KINDS:
        plural = KIND_BY_NAME[kind].plural

        def make_handler(kind_name: str) -> Any:
            async def on_event(event: dict[str, Any], **_: Any) -> None:
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                controller.on_event(kind_name, event.get("type") or "ADDED", meta.get("namespace"), meta.get("name"))

            return on_event

        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"watch-{plural}")(make_handler(kind))

    def secret_in_use(name: str, namespace: str, **_: Any) -> bool:
        return controller.index.is_used(("Secret", namespace, name))

    @kopf.on.event("", "v1", "secrets", registry=registry, id="watch-secrets", when=secret_in_use)
    async def on_secret(event: dict[str, Any], name: str, namespace: str, **_: Any) -> None:
        controller.enqueue_dependents(("Secret", namespace, name))

    @kopf.on.event("apps", "v1", "deployments", registry=registry, id="watch-deployments",
                   labels={"app.kubernetes.io/managed-by": "kagent", AGENT_LABEL: kopf.PRESENT})
    async def on_deployment(labels: dict[str, str], namespace: str, **_: Any) -> None:
        controller.enqueue(("Agent", namespace, labels[AGENT_LABEL]))

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", registry=registry,
                   id="watch-keda", when=lambda name, **_: name == "scaledobjects.keda.sh")
    async def on_keda_crd(**_: Any) -> None:
        controller.keda_changed()

    if with_webhooks:
        register_webhooks(registry, controller.client)
    return registry


def kopf_settings(settings: ControllerSettings, webhook_server: Any | None) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    config.posting.enabled = False  # we post our own, meaningful Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.error_backoffs = [1, 2, 5, 10]
    config.peering.standalone = True  # leadership is ours (a Lease), kopf's peering is not HA
    config.persistence.finalizer = "kagent.dev/finalizer"
    if webhook_server is not None:
        config.admission.server = webhook_server
        if settings.webhook and settings.webhook.manage_configuration:
            config.admission.managed = CONFIGURATION_NAME
    return config


async def _webhook_server(client: AsyncClient, settings: ControllerSettings) -> Any | None:
    hook = settings.webhook
    if hook is None:
        return None
    if hook.cert_dir is not None:
        cert_file, key_file = hook.cert_dir / "tls.crt", hook.cert_dir / "tls.key"
        ca_file = hook.cert_dir / "ca.crt"
    else:
        service_dns = f"{hook.service_name}.{settings.namespace}.svc"
        hosts = [service_dns, f"{service_dns}.cluster.local", "127.0.0.1", "localhost"]
        if hook.host:
            hosts.append(hook.host)
        tls = await ensure_ca(client, settings.namespace, Path(tempfile.mkdtemp(prefix="kagent-webhook-")), hosts)
        cert_file, key_file, ca_file = tls.cert_file, tls.key_file, tls.ca_file
        if not hook.manage_configuration:
            await inject_ca_bundle(client, ca_file)  # the chart's configurations: the CA only
    common = {"addr": hook.listen, "port": hook.port, "certfile": str(cert_file),
              "pkeyfile": str(key_file), "cafile": str(ca_file) if ca_file.exists() else None}
    if hook.host is not None:
        return kopf.WebhookServer(host=hook.host, **common)
    return ServiceWebhookServer(service_namespace=settings.namespace, service_name=hook.service_name,
                                service_port=hook.service_port, **common)


async def run(settings: ControllerSettings) -> None:
    """Run the controller until cancelled."""
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)  # kopf's own login reads it
    client = async_client(settings.kubeconfig)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    controller = Controller(client, settings, discover_mcp=mcp_discoverer(client))
    webhook_server = await _webhook_server(client, settings)
    registry = build_registry(controller, with_webhooks=webhook_server is not None)
    elector = LeaderElector(client, settings.namespace, "kagent-controller", settings.identity,
                            lease_seconds=settings.lease_seconds)
    election = asyncio.create_task(elector.run(controller.lead))
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(settings, webhook_server),
            clusterwide=True,
            standalone=True,
        )
    finally:
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
        await elector.release()
        await client.close()
