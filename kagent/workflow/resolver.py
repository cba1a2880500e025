"""Where the engine reaches an agent, and whether the agent is ready to be called.

Readiness always comes from the cluster (the Agent's Ready condition); the address is the
Agent's ``status.endpoint`` (its Service) unless overridden, so tests and ``kagent dev`` can
point the engine at local processes without any special case in the engine:

- ``KAGENT_WORKFLOW_AGENT_URLS``: JSON object from ``name`` or ``namespace/name`` to a base URL;
- ``KAGENT_WORKFLOW_AGENT_URL_TEMPLATE``: e.g. ``http://{name}.{namespace}.svc:8080``.

A Ready agent's address is remembered for a few seconds, so the steps of busy runs do not read
the same Agent from the API server for every call; an agent that is not Ready is never
remembered (a waiting run sees it become Ready at once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kagent.kube import KAGENT_RESOURCES, is_not_found
from kagent.kube.conditions import condition


class AgentNotReady(Exception):
    """The agent cannot take requests yet; ``str()`` says why, naming the agent."""


class AgentResolver(Protocol):
    async def resolve(self, namespace: str, name: str) -> str:
        """The agent's base URL; raises AgentNotReady while it is missing or not Ready."""
        ...


READY_CACHE_SECONDS = 5.0
READY_CACHE_SIZE = 4096


@dataclass
class ClusterAgentResolver:
    client: AsyncClient
    urls: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    ready_seconds: float = READY_CACHE_SECONDS
    _ready: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_environment(cls, client: AsyncClient,
                         environ: Mapping[str, str] | None = None) -> ClusterAgentResolver:
        env = os.environ if environ is None else environ
        urls = json.loads(env.get("KAGENT_WORKFLOW_AGENT_URLS") or "{}")
        return cls(client, urls=urls, template=env.get("KAGENT_WORKFLOW_AGENT_URL_TEMPLATE") or None)

    async def resolve(self, namespace: str, name: str) -> str:
        key = (namespace, name)
        now = time.monotonic()
        known = self._ready.get(key)
        if known is not None and known[0] > now:
            return known[1]
        agent = await self._agent(namespace, name)
        status = agent.get("status") or {}
        ready = condition(status.get("conditions"), "Ready")
        if not ready or ready.get("status") != "True":
            self._ready.pop(key, None)
            why = (ready or {}).get("message") or "not ready yet"
            raise AgentNotReady(f'Agent "{name}" is not Ready: {why}')
        url = self.address(namespace, name, status.get("endpoint"))
        if len(self._ready) >= READY_CACHE_SIZE:
            self._ready = {k: v for k, v in self._ready.items() if v[0] > now}
        if len(self._ready) < READY_CACHE_SIZE:
            self._ready[key] = (now + self.ready_seconds, url)
        return url

    def address(self, namespace: str, name: str, endpoint: str | None) -> str:
        override = self.urls.get(f"{namespace}/{name}") or self.urls.get(name)
        if override:
            return override.rstrip("/")
        if self.template:
            return self.template.format(name=name, namespace=namespace).rstrip("/")
        if not endpoint:
            raise AgentNotReady(f'Agent "{name}" has no endpoint yet')
        return endpoint.rstrip("/")

    async def _agent(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj = await self.client.get(KAGENT_RESOURCES["Agent"], name, namespace=namespace)
        except ApiError as error:
            if is_not_found(error):
                raise AgentNotReady(f'Agent "{name}" does not exist') from None
            raise
        return obj.to_dict()
