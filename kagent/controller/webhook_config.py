"""Keep the CA bundle of Kagent's own webhook configurations current — and touch nothing else.

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


def ca_bundle_patch(configuration: Any, bundle: str) -> dict[str, Any]:
    """A strategic merge patch setting ``caBundle`` on every webhook of one configuration (the
    list merges by webhook name, so rules, paths and policies stay as the chart wrote them)."""
    return {"webhooks": [{"name": hook.name, "clientConfig": {"caBundle": bundle}}
                         for hook in configuration.webhooks or []]}


async def inject_ca_bundle(client: AsyncClient, bundle: str, name: str = WEBHOOK_CONFIGURATION_NAME) -> None:
    for kind in CONFIGURATION_KINDS:
        configuration = await client.get(kind, name)
        await client.patch(kind, name, ca_bundle_patch(configuration, bundle), patch_type=PatchType.STRATEGIC)


class CaBundleInjector:
    """Wraps the webhook server (kopf's ``admission.server``): each client configuration the
    server announces (a new or renewed CA) has its bundle written into the configurations."""

    def __init__(self, server: Any, client: AsyncClient, name: str = WEBHOOK_CONFIGURATION_NAME) -> None:
        self.server = server
        self.client = client
        self.name = name

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.server(fn):
            bundle = client_config.get("caBundle")
            if bundle:
                await self._inject(bundle)
            yield client_config

    async def _inject(self, bundle: str) -> None:
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            try:
                await inject_ca_bundle(self.client, bundle, self.name)
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
