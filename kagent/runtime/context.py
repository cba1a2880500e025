"""What every part of the runtime shares: secrets, how to reach other agents, one HTTP client."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from kagent.runtime.secrets import SecretResolver

DEFAULT_AGENT_URL_TEMPLATE = "http://{name}.{namespace}.svc.cluster.local"


@dataclass
class RuntimeContext:
    agent_name: str
    namespace: str
    secrets: SecretResolver
    agent_url_template: str = DEFAULT_AGENT_URL_TEMPLATE
    """Base URL of another agent's server, from its name and namespace. The controller sets
    KAGENT_AGENT_URL_TEMPLATE; `kagent dev` points it at local processes."""
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=60.0))

    def agent_url(self, name: str) -> str:
        return self.agent_url_template.format(name=name, namespace=self.namespace).rstrip("/")
