"""The controller process: the leader's cache and reconcilers, leader election, the admission
webhook and metrics.

Watches are ours (:mod:`kagent.controller.cache`, an informer per kind feeding one work queue);
kopf serves the admission webhook, which every replica does, and manages its configuration.
Only the leader reconciles (see :mod:`kagent.controller.leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import kopf
from lightkube import AsyncClient

from kagent.agentclient import (
    Credentials,
    MintedToken,
    default_credentials,
    set_default_credentials,
)
from kagent.api.labels import AGENT_TOKEN_AUDIENCE, LEASE_NAME, WEBHOOK_CONFIGURATION_NAME
from kagent.controller.health import LoopHeartbeat, start_health_server
from kagent.controller.leader import ElectionThread, LeaderElector, election_client
from kagent.controller.manager import Controller
from kagent.controller.mcp_discovery import mcp_discoverer
from kagent.controller.settings import ControllerSettings, WebhookSettings
from kagent.controller.webhook_config import CaBundleInjector, configurations_exist
from kagent.kube import async_client, watch_http_client
from kagent.kube.tokens import request_token
from kagent.webhook.server import (
    register_webhooks,
    webhook_server,
)

__all__ = ["Controller", "ControllerSettings", "WebhookSettings", "run"]

log = logging.getLogger("kagent.controller")

API_TIMEOUT_SECONDS = 60.0


def build_registry(client: AsyncClient) -> kopf.OperatorRegistry:
    """kopf's part: log in, and the admission webhooks."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    register_webhooks(registry, client)
    return registry


def kopf_settings(settings: ControllerSettings, webhook_server: Any | None,
                  kopf_manages_configuration: bool = True) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    config.posting.enabled = False  # we post our own, meaningful Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.error_backoffs = [1, 2, 5, 10]
    config.peering.standalone = True  # leadership is ours (a Lease), kopf's peering is not HA
    if webhook_server is not None:
        config.admission.server = webhook_server
        if settings.webhook and settings.webhook.manage_configuration and kopf_manages_configuration:
            config.admission.managed = WEBHOOK_CONFIGURATION_NAME
    return config


async def _webhook_server(client: AsyncClient, settings: ControllerSettings) -> Any | None:
    if settings.webhook is None:
        return None
    return await webhook_server(client, settings.namespace, settings.webhook)


CONTROLLER_ACCOUNT_ENV = "KAGENT_CONTROLLER_SERVICE_ACCOUNT"
"""``namespace/name`` of the ServiceAccount whose identity the workflow engine calls agents
with when the controller runs outside a pod (in a pod: the pod's own ServiceAccount token)."""


def controller_credentials(client: AsyncClient) -> Credentials | None:
    """The identity the workflow engine calls agents with."""
    account = os.environ.get(CONTROLLER_ACCOUNT_ENV, "")
    if "/" not in account:
        return default_credentials()
    namespace, name = account.split("/", 1)
    return MintedToken(lambda: request_token(client, namespace, name,
                                             audiences=[AGENT_TOKEN_AUDIENCE]))


async def run(settings: ControllerSettings, client: AsyncClient | None = None) -> None:
    """Run the controller until cancelled. ``client`` is the one the reconcilers and the
    workflow engine share (made from the settings when not given); leader election always
    makes its own."""
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)  # kopf's own login reads it
    # The API server gives up on a request after 60 s; so does the controller (a shorter timeout
    # only turns a slow, busy API server into retries that load it more).
    owns_client = client is None
    if client is None:
        client = async_client(settings.kubeconfig, timeout=API_TIMEOUT_SECONDS)
    set_default_credentials(controller_credentials(client))
    http = watch_http_client(settings.kubeconfig)
    heartbeat = LoopHeartbeat(settings.loop_stall_seconds)
    beating = asyncio.create_task(heartbeat.run(), name="loop-heartbeat")
    health = start_health_server(settings.metrics_port, heartbeat) if settings.metrics_port else None
    controller = Controller(client, settings, http, discover_mcp=mcp_discoverer(client))
    webhook_server = await _webhook_server(client, settings)
    kopf_manages = True
    if webhook_server is not None and settings.webhook and settings.webhook.manage_configuration \
            and await configurations_exist(client):
        # The chart made them: only their CA bundle is ours to write, by name.
        webhook_server = CaBundleInjector(webhook_server, client)
        kopf_manages = False
    elector = ElectionThread(lambda: LeaderElector(
        election_client(settings.kubeconfig), settings.namespace, LEASE_NAME, settings.identity,
        lease_seconds=settings.lease_seconds))
    election = asyncio.create_task(elector.run(controller.lead))
    try:
        if webhook_server is None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, election.cancel)  # kopf does this when it runs
            with contextlib.suppress(asyncio.CancelledError):
                await election
        else:
            await kopf.operator(
                registry=build_registry(client),
                settings=kopf_settings(settings, webhook_server, kopf_manages),
                clusterwide=True,
                standalone=True,
            )
    finally:
        election.cancel()
        beating.cancel()
        await asyncio.gather(election, beating, return_exceptions=True)
        if health is not None:
            health.shutdown()
        await http.aclose()
        if owns_client:
            await client.close()
