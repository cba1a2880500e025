"""Tool and Memory reconcile: they own no children; their status says whether what they refer
to resolves (Secrets; for agent tools the Agent; for MCP tools the server and its tools).
Everything is read from the cache; only an MCP server's tools are fetched (from the server)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import AsyncClient

from kagent.api import Memory, Tool
from kagent.api.manifests import ManifestError
from kagent.api.memory import MemoryStatus
from kagent.api.secrets import iter_secret_refs, unique_refs
from kagent.api.tool import DiscoveredTool, ToolStatus
from kagent.controller.cache import ControllerCache
from kagent.controller.resolve import Dependency, parse_cached, secret_digest
from kagent.controller.status import (
    code_isolation,
    memory_status,
    read_status,
    status_changed,
    tool_status,
)
from kagent.kube.conditions import now_rfc3339, transitions
from kagent.kube.reconcile import ObjectKey, Result, Verdict

log = logging.getLogger("kagent.controller.references")

McpDiscovery = Callable[[Tool], Awaitable[list[dict[str, Any]]]]
"""Lists an MCP Tool's server tools as DiscoveredTool dicts (name, description)."""

MCP_REFRESH_SECONDS = 300.0
MCP_RETRY_SECONDS = 30.0


class ReferenceReconciler:
    """Reconciles Tools and Memories."""

    def __init__(self, client: AsyncClient, cache: ControllerCache,
                 discover_mcp: McpDiscovery | None = None) -> None:
        self.client = client
        self.cache = cache
        self.discover_mcp = discover_mcp

    async def reconcile(self, key: ObjectKey) -> Result:
        kind, namespace, name = key
        raw = self.cache.get(kind, namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return Result.forget()
        generation = raw["metadata"].get("generation", 0)
        dependencies: set[Dependency] = set()
        discovered: list[DiscoveredTool] | None = None
        requeue: float | None = None
        resource: Tool | Memory | None = None
        try:
            resource = parse_cached(raw)
        except ManifestError as error:
            accepted = Verdict(False, "InvalidSpec", str(error).replace("\n", " "))
        else:
            assert isinstance(resource, (Tool, Memory))
            refs = unique_refs(list(iter_secret_refs(resource.spec)))
            dependencies.update(("Secret", namespace, r.name) for r in refs)
            _, missing = secret_digest(self.cache, namespace, refs)
            if isinstance(resource, Tool) and resource.spec.agent is not None:
                target = resource.spec.agent.name
                dependencies.add(("Agent", namespace, target))
                if self.cache.get("Agent", namespace, target) is None:
                    missing.append(f'Agent "{target}"')
            if missing:
                accepted = Verdict(False, "ReferenceNotFound", "not found: " + ", ".join(missing))
            elif isinstance(resource, Tool) and resource.spec.mcp is not None and self.discover_mcp:
                accepted, discovered, requeue = await self._discover(resource)
            else:
                accepted = Verdict(True, "Resolved", "every reference resolves")
        now = now_rfc3339()
        status: ToolStatus | MemoryStatus
        if kind == "Tool":
            previous_tool = read_status(ToolStatus, raw.get("status"))
            code = resource.spec.code if isinstance(resource, Tool) else None
            isolated = code_isolation(code) if code is not None else None
            status = tool_status(previous_tool, generation, accepted, now, discovered, isolated)
            previous: ToolStatus | MemoryStatus = previous_tool
        else:
            previous_memory = read_status(MemoryStatus, raw.get("status"))
            status = memory_status(previous_memory, generation, accepted, now)
            previous = previous_memory
        if status_changed(previous, status):
            await self.cache.write_status(self.client, raw, status)
        return Result(requeue_after=requeue, dependencies=frozenset(dependencies),
                      transitions=transitions(previous.conditions, status.conditions))

    async def _discover(self, tool: Tool) -> tuple[Verdict, list[DiscoveredTool] | None, float]:
        """Ask the MCP server which tools it offers."""
        assert self.discover_mcp is not None and tool.spec.mcp is not None
        try:
            offered = await self.discover_mcp(tool)
        except Exception as error:  # noqa: BLE001 - any failure to reach the server
            message = f"listing tools at {tool.spec.mcp.url} failed: {error}"
            return Verdict(False, "McpServerUnreachable", message), None, MCP_RETRY_SECONDS
        wanted = tool.spec.mcp.tool_names
        names = {t["name"] for t in offered}
        absent = [n for n in wanted or [] if n not in names]
        if absent:
            verdict = Verdict(False, "McpToolNotFound", f"the MCP server does not offer: {', '.join(absent)}")
        else:
            verdict = Verdict(True, "Discovered", f"the MCP server offers {len(offered)} tools")
        discovered = [DiscoveredTool.model_validate(t) for t in offered if not wanted or t["name"] in wanted]
        return verdict, discovered, MCP_REFRESH_SECONDS
