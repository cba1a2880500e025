"""Keep the address and CA bundle of Kagent's own webhook configurations current — and touch
nothing else.

The Helm chart creates the two configurations (``kagent.dev``); the controller's RBAC lets it
``get`` and ``patch`` exactly those two by name, nothing more (no create, list or watch of
webhook configurations, which would let a compromised controller intercept any API request).
kopf's own manager needs ``create`` on every webhook configuration, so it is used only where
the configurations do not exist yet (``kagent dev`` and tests, with an admin's credentials).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.types import PatchType

from kagent.api.labels import WEBHOOK_CONFIGURATION_NAME
from kagent.kube import is_not_found

log = logging.getLogger("kagent.controller.webhook_config")

CONFIGURATION_KINDS = (ValidatingWebhookConfiguration, MutatingWebhookConfiguration)
PATCH_ATTEMPTS = 6


async def configurations_exist(client: AsyncClient, name: str = WEBHOOK_CONFIGURATION_NAME) -> bool:
    """Whether both of Kagent's webhook configurations exist (made by the chart)."""
    for kind in CONFIGURATION_KINDS:
        try:
            await client.get(kind, name)
        except Exception as error:  # noqa: BLE001 - 404: not there; anything else: raise
            if is_not_found(error):
                return False
            raise
    return True


def handler_client_config(client_config: dict[str, Any], webhook_name: str, suffix: str) -> dict[str, Any]:
    """Where the API server reaches one webhook: this replica's address (a URL, or the Service)
    plus the webhook's own path (``validate-agents.kagent.dev`` → ``/validate-agents``, as kopf
    names them), with the CA bundle."""
    handler_id = webhook_name.removesuffix(f".{suffix}")
    config: dict[str, Any] = {"caBundle": client_config["caBundle"]}
    if client_config.get("url"):
        config["url"] = f"{str(client_config['url']).rstrip('/')}/{handler_id}"
    else:
        service = dict(client_config["service"])
        service["path"] = f"{str(service.get('path') or '').rstrip('/')}/{handler_id}"
        config["service"] = service
    return config


def client_config_patch(configuration: Any, client_config: dict[str, Any], suffix: str) -> list[dict[str, Any]]:
    """A JSON patch replacing each webhook's ``clientConfig`` — and nothing else: rules, policies
    and timeouts stay as the chart wrote them. Each replacement is guarded by a test of the
    webhook's name, so a configuration changed meanwhile is refused, not garbled."""
    ops: list[dict[str, Any]] = []
    for index, hook in enumerate(configuration.webhooks or []):
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook.name})
        ops.append({"op": "replace", "path": f"/webhooks/{index}/clientConfig",
                    "value": handler_client_config(client_config, hook.name, suffix)})
    return ops


async def inject_client_config(client: AsyncClient, client_config: dict[str, Any],
                               name: str = WEBHOOK_CONFIGURATION_NAME) -> None:
    for kind in CONFIGURATION_KINDS:
        configuration = await client.get(kind, name)
        await client.patch(kind, name, client_config_patch(configuration, client_config, name),
                           patch_type=PatchType.JSON)


class CaBundleInjector:
    """Wraps the webhook server (kopf's ``admission.server``): each client configuration the
    server announces (at start, and for a renewed CA) is written into the configurations'
    webhooks — their address and CA bundle only."""

    def __init__(self, server: Any, client: AsyncClient, name: str = WEBHOOK_CONFIGURATION_NAME) -> None:
        self.server = server
        self.client = client
        self.name = name

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.server(fn):
            if client_config.get("caBundle"):
                await self._inject(dict(client_config))
            yield client_config

    async def _inject(self, client_config: dict[str, Any]) -> None:
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            try:
                await inject_client_config(self.client, client_config, self.name)
                log.info("injected the webhook CA bundle into %s", self.name)
                return
            except Exception as error:  # noqa: BLE001 - retried, then told
                if attempt == PATCH_ATTEMPTS:
                    # The webhooks fail closed: without the bundle every write is refused. Stop
                    # (the pod restarts and tries again) rather than serve unverifiable.
                    raise RuntimeError(f"could not inject the webhook CA bundle into {self.name}: "
                                       f"{error}") from error
                log.warning("injecting the webhook CA bundle failed (%s); retrying", error)
                await asyncio.sleep(min(2.0 ** attempt, 30.0))
