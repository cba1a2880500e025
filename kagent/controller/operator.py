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
from prometheus_client import start_http_server

from kagent.api.labels import LEASE_NAME, WEBHOOK_CONFIGURATION_NAME
from kagent.controller.leader import LeaderElector
from kagent.controller.manager import Controller
from kagent.controller.mcp_discovery import mcp_discoverer
from kagent.controller.settings import ControllerSettings, WebhookSettings
from kagent.kube import async_client, watch_http_client
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


def kopf_settings(settings: ControllerSettings, webhook_server: Any | None) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    config.posting.enabled = False  # we post our own, meaningful Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.error_backoffs = [1, 2, 5, 10]
    config.peering.standalone = True  # leadership is ours (a Lease), kopf's peering is not HA
    if webhook_server is not None:
        config.admission.server = webhook_server
        if settings.webhook and settings.webhook.manage_configuration:
            config.admission.managed = WEBHOOK_CONFIGURATION_NAME
    return config


async def _webhook_server(client: AsyncClient, settings: ControllerSettings) -> Any | None:
    if settings.webhook is None:
        return None
    return await webhook_server(client, settings.namespace, settings.webhook)


async def run(settings: ControllerSettings) -> None:
    """Run the controller until cancelled."""
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)  # kopf's own login reads it
    # The API server gives up on a request after 60 s; so does the controller (a shorter timeout
    # only turns a slow, busy API server into retries that load it more).
    client = async_client(settings.kubeconfig, timeout=API_TIMEOUT_SECONDS)
    http = watch_http_client(settings.kubeconfig)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    controller = Controller(client, settings, http, discover_mcp=mcp_discoverer(client))
    webhook_server = await _webhook_server(client, settings)
    elector = LeaderElector(client, settings.namespace, LEASE_NAME, settings.identity,
                            lease_seconds=settings.lease_seconds)
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
                settings=kopf_settings(settings, webhook_server),
                clusterwide=True,
                standalone=True,
            )
    finally:
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
        await elector.release()
        await http.aclose()
        await client.close()
