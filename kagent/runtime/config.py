"""What one agent runtime runs: the Agent, its Tools and Memory, read from the same manifests
a user applies.

The controller's ConfigMap holds exactly these documents (the Agent, then its Tools, then its
Memory), so ``kagent runtime -f`` reads one format in the cluster and outside it. Secret
manifests may be passed too, for running outside a cluster; in a pod the values arrive as
environment variables instead (see :mod:`kagent.runtime.secrets`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagent.api import Agent, Budget, Memory, Tool
from kagent.api.agent import ToolReference
from kagent.api.manifests import ManifestError, load_files, parse_resource
from kagent.api.memory import MemorySpec
from kagent.runtime.budget import budget_may_apply
from kagent.runtime.secrets import SecretResolver

IGNORED_KINDS = frozenset({"Workflow", "WorkflowRun"})
"""Kagent kinds a folder may hold that a runtime has no use for."""


class ConfigError(ValueError):
    """The files do not describe one runnable agent; the message says what to pass."""


@dataclass
class RuntimeConfig:
    """One agent and everything it refers to, resolved."""

    agent: Agent
    tools: list[Tool] = field(default_factory=list)
    """Tool resources the agent uses, in the order the agent lists them."""
    agent_tools: list[ToolReference] = field(default_factory=list)
    """``tools`` entries with ``kind: Agent``: other agents called over A2A."""
    memory: MemorySpec | None = None
    """Inline ``spec.memory`` or the spec of the Memory named by ``memoryRef``."""
    secrets: SecretResolver = field(default_factory=SecretResolver)
    namespace: str = "default"
    budgets: list[Budget] = field(default_factory=list)
    """The Budgets covering this agent (the controller renders the matching ones)."""

    @property
    def name(self) -> str:
        return self.agent.metadata.name or "agent"


def load_runtime_config(
    paths: Iterable[Path],
    *,
    agent_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RuntimeConfig:
    """Read manifests from files or folders into a :class:`RuntimeConfig`."""
    try:
        documents = load_files([Path(p) for p in paths])
    except ManifestError as error:
        raise ConfigError(str(error)) from None
    return build_runtime_config(documents, agent_name=agent_name, environ=environ)


def build_runtime_config(
    documents: list[dict[str, Any]],
    *,
    agent_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RuntimeConfig:
    """Resolve parsed documents into one agent's configuration.

    When several Agents are given, ``agent_name`` (or ``KAGENT_AGENT_NAME``) picks one.
    """
    env = os.environ if environ is None else environ
    agents: list[Agent] = []
    tools: dict[str, Tool] = {}
    memories: dict[str, Memory] = {}
    budgets: list[Budget] = []
    secret_manifests: list[dict[str, Any]] = []
    for document in documents:
        kind = document.get("kind")
        if kind == "Secret" and document.get("apiVersion") == "v1":
            secret_manifests.append(document)
            continue
        if kind in IGNORED_KINDS:
            continue
        try:
            resource = parse_resource(document)
        except ManifestError as error:
            raise ConfigError(str(error)) from None
        if isinstance(resource, Agent):
            agents.append(resource)
        elif isinstance(resource, Tool):
            tools[resource.metadata.name or ""] = resource
        elif isinstance(resource, Memory):
            memories[resource.metadata.name or ""] = resource
        elif isinstance(resource, Budget):
            budgets.append(resource)

    agent = _pick_agent(agents, agent_name or env.get("KAGENT_AGENT_NAME"))
    spec = agent.spec
    used_tools: list[Tool] = []
    agent_tools: list[ToolReference] = []
    for ref in spec.tools or []:
        if ref.kind == "Agent":
            agent_tools.append(ref)
            continue
        if ref.name not in tools:
            raise ConfigError(
                f'Agent "{agent.metadata.name}" uses Tool "{ref.name}", which is not among the '
                "files given: pass its manifest with -f"
            )
        used_tools.append(tools[ref.name])

    memory = spec.memory
    if spec.memory_ref is not None:
        found = memories.get(spec.memory_ref.name)
        if found is None:
            raise ConfigError(
                f'Agent "{agent.metadata.name}" refers to Memory "{spec.memory_ref.name}" '
                "(memoryRef), which is not among the files given: pass its manifest with -f"
            )
        memory = found.spec

    namespace = env.get("KAGENT_NAMESPACE") or agent.metadata.namespace or "default"
    return RuntimeConfig(
        agent=agent,
        tools=used_tools,
        agent_tools=agent_tools,
        memory=memory,
        secrets=SecretResolver(secret_manifests, environ=env),
        namespace=namespace,
        budgets=[b for b in budgets if budget_may_apply(b, agent.metadata.labels or {})],
    )


def _pick_agent(agents: list[Agent], wanted: str | None) -> Agent:
    if not agents:
        raise ConfigError("no Agent among the files given: pass the Agent manifest with -f")
    if wanted:
        for agent in agents:
            if agent.metadata.name == wanted:
                return agent
        if len(agents) > 1:
            names = ", ".join(sorted(a.metadata.name or "?" for a in agents))
            raise ConfigError(f'no Agent named "{wanted}" among the files given (found: {names})')
    if len(agents) > 1:
        names = ", ".join(sorted(a.metadata.name or "?" for a in agents))
        raise ConfigError(
            f"several Agents among the files given ({names}): set KAGENT_AGENT_NAME to pick one"
        )
    return agents[0]
