"""Gather what an Agent refers to — Tools, Memory, other Agents, Secret keys — from the cluster.

The result says what is missing (for the Accepted condition) and which objects the Agent depends
on (for the reverse index that re-reconciles exactly the Agents a change affects).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Secret

from kagent.api import Agent, Memory, Tool
from kagent.api.base import SecretKeySelector
from kagent.api.manifests import ManifestError, parse_resource
from kagent.controller.render import AgentInputs, agent_secret_refs
from kagent.kube import KAGENT_RESOURCES, is_not_found

Dependency = tuple[str, str, str]
"""(kind, namespace, name) of an object an Agent depends on."""


@dataclass
class Resolution:
    inputs: AgentInputs | None
    missing: list[str] = field(default_factory=list)
    """Human-readable names of what does not resolve, e.g. 'Tool "create-ticket"'."""
    reason: str = ""
    dependencies: set[Dependency] = field(default_factory=set)


async def _get_kagent(client: AsyncClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = await client.get(KAGENT_RESOURCES[kind], name, namespace=namespace)
    except ApiError as error:
        if is_not_found(error):
            return None
        raise
    return obj.to_dict()


async def secret_digest(
    client: AsyncClient, namespace: str, refs: list[SecretKeySelector]
) -> tuple[str, list[str]]:
    """A digest of the referenced keys' values, and the refs that do not resolve."""
    digest = hashlib.sha256()
    missing: list[str] = []
    secrets: dict[str, dict[str, str] | None] = {}
    for ref in refs:
        if ref.name not in secrets:
            try:
                secret = await client.get(Secret, ref.name, namespace=namespace)
                secrets[ref.name] = dict(secret.data or {})
                secrets[ref.name].update(
                    {k: v for k, v in (secret.stringData or {}).items()}  # never set by the server
                )
            except ApiError as error:
                if not is_not_found(error):
                    raise
                secrets[ref.name] = None
        data = secrets[ref.name]
        if data is None:
            missing.append(f'Secret "{ref.name}"')
        elif ref.key not in data:
            missing.append(f'key "{ref.key}" in Secret "{ref.name}"')
        else:
            digest.update(f"{ref.name}\0{ref.key}\0{data[ref.key]}\0".encode())
    return digest.hexdigest()[:16], missing


async def resolve_agent(
    client: AsyncClient, agent: Agent, keda_available: bool, image: str
) -> Resolution:
    namespace = str(agent.metadata.namespace)
    missing: list[str] = []
    reasons: list[str] = []
    dependencies: set[Dependency] = set()
    tools: list[Tool] = []
    for ref in agent.spec.tools or []:
        dependencies.add((ref.kind, namespace, ref.name))
        found = await _get_kagent(client, ref.kind, namespace, ref.name)
        if found is None:
            missing.append(f'{ref.kind} "{ref.name}"')
            reasons.append(f"{ref.kind}NotFound")
        elif ref.kind == "Tool":
            tool = _typed(found, Tool, missing)
            if tool is None:
                reasons.append("ToolInvalid")
            else:
                tools.append(tool)
    memory: Memory | None = None
    if agent.spec.memory_ref is not None:
        name = agent.spec.memory_ref.name
        dependencies.add(("Memory", namespace, name))
        found = await _get_kagent(client, "Memory", namespace, name)
        if found is None:
            missing.append(f'Memory "{name}"')
            reasons.append("MemoryNotFound")
        else:
            memory = _typed(found, Memory, missing)
            if memory is None:
                reasons.append("MemoryInvalid")
    inputs = AgentInputs(agent=agent, tools=tools, memory=memory, keda_available=keda_available, image=image)
    refs = agent_secret_refs(inputs)
    dependencies.update(("Secret", namespace, ref.name) for ref in refs)
    digest, missing_secrets = await secret_digest(client, namespace, refs)
    if missing_secrets:
        missing.extend(missing_secrets)
        reasons.append("SecretNotFound")
    if missing:
        return Resolution(inputs=None, missing=missing, reason=reasons[0], dependencies=dependencies)
    inputs = AgentInputs(
        agent=agent, tools=tools, memory=memory, secret_digest=digest,
        keda_available=keda_available, image=image,
    )
    return Resolution(inputs=inputs, dependencies=dependencies)


def _typed(document: dict[str, Any], kind: type[Tool] | type[Memory], problems: list[str]) -> Any:
    """The typed object, or None (with the problem recorded) if it does not parse."""
    try:
        resource = parse_resource(document)
    except ManifestError as error:
        problems.append(str(error).replace("\n", " "))
        return None
    return resource if isinstance(resource, kind) else None
