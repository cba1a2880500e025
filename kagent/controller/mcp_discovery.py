"""List an MCP Tool's server tools for its status, with the runtime's own MCP client code."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

from kagent.api import Tool
from kagent.api.secrets import iter_secret_refs
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver


def mcp_discoverer(client: AsyncClient) -> Any:
    """A discovery function bound to a client (Secrets for headersFrom are read from the API)."""

    async def discover(tool: Tool) -> list[dict[str, Any]]:
        from kagent.runtime.tools import list_mcp_tools

        namespace = str(tool.metadata.namespace)
        manifests = []
        for name in {ref.name for ref in iter_secret_refs(tool.spec)}:
            secret = await client.get(Secret, name, namespace=namespace)
            manifests.append({"metadata": {"name": name}, "data": dict(secret.data or {})})
        ctx = RuntimeContext(
            agent_name="kagent-controller", namespace=namespace,
            secrets=SecretResolver(manifests, environ={}),
        )
        try:
            return await list_mcp_tools(tool, ctx)
        finally:
            await ctx.http.aclose()

    return discover
