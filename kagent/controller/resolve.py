"""Gather what an Agent, Tool or Memory refers to — Tools, Memory, other Agents, Secret keys —
from the cache. No I/O: the watch-fed cache already holds all of it.

The result says what is missing (for the Accepted condition) and which objects the reconciled
object depends on (for the reverse index that re-reconciles exactly what a change affects).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kagent.api import Agent, Budget, Memory, Tool
from kagent.api.base import SecretKeySelector
from kagent.api.manifests import ManifestError, parse_resource
from kagent.controller.render import AgentInputs, NetworkPolicySettings, agent_secret_refs
from kagent.kube.reconcile import ObjectKey, ObjectReader
from kagent.runtime.budget import budget_may_apply

Dependency = ObjectKey
"""(kind, namespace, name) of an object another one depends on."""


class SecretReader(ObjectReader, Protocol):
    """The cache, which holds Secrets' metadata, plus the key names of the referenced ones."""

    def secret_keys(self, namespace: str, name: str) -> tuple[str, ...] | None: ...


@dataclass
class Resolution:
    inputs: AgentInputs | None
    missing: list[str] = field(default_factory=list)
    """Human-readable names of what does not resolve, e.g. 'Tool "create-ticket"'."""
    reason: str = ""
    dependencies: set[Dependency] = field(default_factory=set)
    unread_secrets: list[str] = field(default_factory=list)
    """Referenced Secrets whose key names are not known yet: read them and resolve again."""


def parse_cached(raw: dict[str, Any]) -> Agent | Tool | Memory | Budget:
    """The typed spec of a cached Kagent object (status is read separately, tolerantly)."""
    resource = parse_resource({k: v for k, v in raw.items() if k != "status"})
    assert isinstance(resource, (Agent, Tool, Memory, Budget))
    return resource


@dataclass(frozen=True)
class SecretCheck:
    digest: str
    """Of the referenced keys and their Secrets' versions."""
    missing: list[str]
    unread: list[str]
    """Secrets that exist but whose key names have not been read yet."""


def secret_digest(cache: SecretReader, namespace: str, refs: Iterable[SecretKeySelector]) -> SecretCheck:
    """A digest of the referenced Secrets' versions, and the refs that do not resolve.

    The digest covers each referenced key and the resourceVersion of its Secret — never a value —
    so rotating a referenced Secret rolls the pods while an unrelated Secret does not."""
    digest = hashlib.sha256()
    missing: list[str] = []
    unread: list[str] = []
    for ref in refs:
        secret = cache.get("Secret", namespace, ref.name)
        keys = cache.secret_keys(namespace, ref.name)
        if secret is None:
            missing.append(f'Secret "{ref.name}"')
        elif keys is None:
            if ref.name not in unread:
                unread.append(ref.name)
        elif ref.key not in keys:
            missing.append(f'key "{ref.key}" in Secret "{ref.name}"')
        else:
            version = secret["metadata"].get("resourceVersion", "")
            digest.update(f"{ref.name}\0{ref.key}\0{version}\0".encode())
    return SecretCheck(digest.hexdigest()[:16], missing, unread)


def resolve_agent(cache: SecretReader, agent: Agent, keda_available: bool, image: str,
                  network: NetworkPolicySettings | None = None) -> Resolution:
    namespace = str(agent.metadata.namespace)
    missing: list[str] = []
    reasons: list[str] = []
    dependencies: set[Dependency] = set()
    tools: list[Tool] = []
    for ref in agent.spec.tools or []:
        dependencies.add((ref.kind, namespace, ref.name))
        found = cache.get(ref.kind, namespace, ref.name)
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
        found = cache.get("Memory", namespace, name)
        if found is None:
            missing.append(f'Memory "{name}"')
            reasons.append("MemoryNotFound")
        else:
            memory = _typed(found, Memory, missing)
            if memory is None:
                reasons.append("MemoryInvalid")
    budgets = covering_budgets(cache, agent)
    dependencies.update(("Budget", namespace, str(b.metadata.name)) for b in budgets)
    inputs = AgentInputs(agent=agent, tools=tools, memory=memory, keda_available=keda_available,
                         image=image, budgets=budgets)
    refs = agent_secret_refs(inputs)
    dependencies.update(("Secret", namespace, ref.name) for ref in refs)
    secrets = secret_digest(cache, namespace, refs)
    if secrets.missing:
        missing.extend(secrets.missing)
        reasons.append("SecretNotFound")
    if missing or secrets.unread:
        return Resolution(inputs=None, missing=missing, reason=reasons[0] if reasons else "",
                          dependencies=dependencies, unread_secrets=secrets.unread)
    inputs = AgentInputs(
        agent=agent, tools=tools, memory=memory, secret_digest=secrets.digest,
        keda_available=keda_available, image=image, network=network or NetworkPolicySettings(),
    )
    inputs = dataclasses.replace(inputs, budgets=budgets)
    return Resolution(inputs=inputs, dependencies=dependencies)


def covering_budgets(cache: ObjectReader, agent: Agent) -> list[Budget]:
    """The namespace's Budgets that cover ``agent`` (by name, so the config is stable); one that
    does not parse is left out (the API server's schema makes that rare)."""
    found = []
    for raw in cache.list("Budget", str(agent.metadata.namespace)):
        try:
            budget = parse_resource({k: v for k, v in raw.items() if k != "status"})
        except ManifestError:
            continue
        if isinstance(budget, Budget) and budget_may_apply(budget, agent.metadata.labels or {}):
            found.append(budget)
    return sorted(found, key=lambda b: str(b.metadata.name))


def _typed(document: dict[str, Any], kind: type[Tool] | type[Memory], problems: list[str]) -> Any:
    """The typed object, or None (with the problem recorded) if it does not parse."""
    try:
        resource = parse_cached(document)
    except ManifestError as error:
        problems.append(str(error).replace("\n", " "))
        return None
    return resource if isinstance(resource, kind) else None
