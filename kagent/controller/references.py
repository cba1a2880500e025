"""Tool and Memory reconcile: they own no children; their status says whether what they refer
to resolves (Secrets; for agent tools the Agent; for MCP tools the server and its tools)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from kagent.api import Memory, Tool
from kagent.api.tool import CodeTool
from kagent.api.manifests import ManifestError, parse_resource
from kagent.api.secrets import iter_secret_refs, unique_refs
from kagent.kube.conditions import condition, now_rfc3339, set_condition
from kagent.controller.resolve import Dependency, secret_digest
from kagent.kube import KAGENT_RESOURCES, is_not_found

log = logging.getLogger("kagent.controller.references")

McpDiscovery = Callable[[Tool], Awaitable[list[dict[str, Any]]]]
"""Lists an MCP Tool's server tools as DiscoveredTool dicts (name, description)."""

MCP_REFRESH_SECONDS = 300.0


def code_isolation(code: CodeTool) -> tuple[bool, str, str]:
    """The Isolated condition of a code Tool: whether its programs run only fully isolated."""
    if code.isolation == "strict":
        return (True, "Strict", "programs run only inside every isolation layer; an agent pod "
                "that cannot provide them refuses to run them (the model and the agent's log "
                "say why)")
    return (False, "WeakerIsolationAccepted", "isolation is best-effort: programs run even "
            "where the agent pod lacks some isolation layers")


async def reconcile_references(
    client: AsyncClient, kind: str, namespace: str, name: str, discover_mcp: McpDiscovery | None = None
) -> tuple[set[Dependency], list[tuple[str, str, str, str]], float | None] | None:
    """Reconcile a Tool or Memory. Returns (dependencies, transitions, requeue) or None if gone."""
    res = KAGENT_RESOURCES[kind]
    try:
        raw = (await client.get(res, name, namespace=namespace)).to_dict()
    except ApiError as error:
        if is_not_found(error):
            return None
        raise
    generation = raw["metadata"].get("generation", 0)
    previous = raw.get("status") or {}
    dependencies: set[Dependency] = set()
    extra_status: dict[str, Any] = {}
    requeue: float | None = None
    try:
        resource = parse_resource(raw)
    except ManifestError as error:
        accepted = (False, "InvalidSpec", str(error).replace("\n", " "))
    else:
        assert isinstance(resource, (Tool, Memory))
        refs = unique_refs(list(iter_secret_refs(resource.spec)))
        dependencies.update(("Secret", namespace, r.name) for r in refs)
        _, missing = await secret_digest(client, namespace, refs)
        if isinstance(resource, Tool) and resource.spec.agent is not None:
            target = resource.spec.agent.name
            dependencies.add(("Agent", namespace, target))
            try:
                await client.get(KAGENT_RESOURCES["Agent"], target, namespace=namespace)
            except ApiError as error:
                if not is_not_found(error):
                    raise
                missing.append(f'Agent "{target}"')
        if missing:
            accepted = (False, "ReferenceNotFound", "not found: " + ", ".join(missing))
        elif isinstance(resource, Tool) and resource.spec.mcp is not None and discover_mcp:
            requeue = MCP_REFRESH_SECONDS
            try:
                tools = await discover_mcp(resource)
            except Exception as error:  # noqa: BLE001 - any failure to reach the server
                accepted = (False, "McpServerUnreachable", f"listing tools at {resource.spec.mcp.url} failed: {error}")
                requeue = 30.0
            else:
                wanted = resource.spec.mcp.tool_names
                offered = {t["name"] for t in tools}
                absent = [n for n in wanted or [] if n not in offered]
                if absent:
                    accepted = (False, "McpToolNotFound", f"the MCP server does not offer: {', '.join(absent)}")
                else:
                    accepted = (True, "Discovered", f"the MCP server offers {len(tools)} tools")
                extra_status["discoveredTools"] = [t for t in tools if not wanted or t["name"] in wanted]
                extra_status["lastDiscoveryTime"] = now_rfc3339()
        else:
            accepted = (True, "Resolved", "every reference resolves")
    now = now_rfc3339()
    conditions = set_condition(previous.get("conditions"), "Accepted", *accepted, generation, now)
    if isinstance(resource, Tool) and resource.spec.code is not None:
        conditions = set_condition(conditions, "Isolated", *code_isolation(resource.spec.code),
                                   generation, now)
    status = {**previous, **extra_status, "observedGeneration": generation, "conditions": conditions}
    before = condition(previous.get("conditions"), "Accepted")
    after = condition(conditions, "Accepted") or {}
    transitions = []
    if before is None or (before.get("status"), before.get("reason")) != (after["status"], accepted[1]):
        transitions.append(("Accepted", after["status"], accepted[1], accepted[2]))
    if status != previous:
        await client.patch(res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE)
    return dependencies, transitions, requeue
