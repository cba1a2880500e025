"""Pure status computation: is a Deployment rolled out, and what the statuses of Agents, Tools and
Memories say. Everything here builds the typed models of :mod:`kagent.api`, so a misspelt field
is an error in a unit test, not a field the API server silently drops."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from kagent.api import AgentStatus
from kagent.api.base import KagentModel
from kagent.api.memory import MemoryStatus
from kagent.api.tool import CodeTool, DiscoveredTool, ToolStatus
from kagent.controller.render import CONFIG_HASH_ANNOTATION
from kagent.kube.conditions import remove_condition, set_condition
from kagent.kube.reconcile import Verdict

log = logging.getLogger("kagent.controller.status")

StatusModel = TypeVar("StatusModel", bound=KagentModel)


def read_status(model: type[StatusModel], raw: dict[str, Any] | None) -> StatusModel:
    """The status as stored, tolerating fields this version does not know (written by another
    version) — they are ignored, not an error. A status that does not parse counts as empty."""
    try:
        return model.model_validate(raw or {}, extra="ignore")
    except ValidationError as error:
        log.warning("ignoring an unreadable %s: %s", model.__name__, error.errors()[:1])
        return model()


def status_changed(previous: KagentModel, new: KagentModel) -> bool:
    """Whether writing ``new`` changes anything but condition timestamps."""

    def comparable(status: KagentModel) -> dict[str, Any]:
        wire = status.to_wire()
        wire["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in wire.get("conditions") or []
        ]
        return wire

    return comparable(previous) != comparable(new)


READY_PROGRESS_REASONS = frozenset({"DeploymentMissing", "RolloutPending", "RolloutInProgress",
                                    "PodsNotReady"})
"""Ready=False reasons that mean "on its way" rather than "broken"."""


@dataclass(frozen=True)
class Rollout:
    ready: bool
    reason: str
    message: str
    replicas: int
    ready_replicas: int


def deployment_rollout(deployment: dict[str, Any] | None, config_hash: str | None) -> Rollout:
    """Whether the Deployment runs the wanted configuration on all its pods, as
    ``kubectl rollout status`` decides it (plus: the pods run the config we rendered)."""
    if deployment is None:
        return Rollout(False, "DeploymentMissing", "the agent's Deployment does not exist yet", 0, 0)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    desired = spec.get("replicas", 1)
    replicas = status.get("replicas", 0)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    ready = status.get("readyReplicas", 0)
    template_hash = (
        ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    ).get(CONFIG_HASH_ANNOTATION)
    if config_hash is not None and template_hash != config_hash:
        return Rollout(False, "RolloutPending", "the new configuration is not applied yet", replicas, ready)
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return Rollout(False, "RolloutInProgress", "waiting for the Deployment to be observed",
                       replicas, ready)
    if updated < desired:
        return Rollout(False, "RolloutInProgress",
                       f"{updated} of {desired} pods run the current configuration", replicas, ready)
    if replicas > updated:
        return Rollout(False, "RolloutInProgress",
                       f"{replicas - updated} old pods are still terminating", replicas, ready)
    if available < updated:
        return Rollout(False, "PodsNotReady", f"{available} of {updated} pods are available",
                       replicas, ready)
    if desired == 0:
        return Rollout(True, "ScaledToZero", "scaled to zero; pods start on demand", replicas, ready)
    return Rollout(True, "RolledOut", f"{available} of {desired} pods are available", replicas, ready)


def agent_status(
    previous: AgentStatus,
    generation: int,
    accepted: Verdict,
    rollout: Rollout,
    autoscaling: Verdict | None,
    endpoint: str | None,
    config_hash: str | None,
    selector: str,
    now: str,
) -> AgentStatus:
    """The Agent's new status from what reconcile observed."""
    conditions = set_condition(previous.conditions, "Accepted", accepted.ok, accepted.reason,
                               accepted.message, generation, now)
    conditions = set_condition(
        conditions, "Ready", accepted.ok and rollout.ready,
        rollout.reason if accepted.ok else "NotAccepted",
        rollout.message if accepted.ok else "the Agent is not accepted: " + accepted.message,
        generation, now,
    )
    if autoscaling is not None:
        conditions = set_condition(conditions, "Autoscaling", autoscaling.ok, autoscaling.reason,
                                   autoscaling.message, generation, now)
    else:
        conditions = remove_condition(conditions, "Autoscaling")
    return AgentStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=rollout.replicas,
        ready_replicas=rollout.ready_replicas,
        selector=selector,
        endpoint=endpoint or previous.endpoint,
        config_hash=config_hash or previous.config_hash,
    )


def code_isolation(code: CodeTool) -> Verdict:
    """The Isolated condition of a code Tool: whether its programs run only fully isolated."""
    if code.isolation == "strict":
        return Verdict(True, "Strict", "programs run only inside every isolation layer; an agent "
                       "pod that cannot provide them refuses to run them (the model and the "
                       "agent's log say why)")
    return Verdict(False, "WeakerIsolationAccepted", "isolation is best-effort: programs run even "
                   "where the agent pod lacks some isolation layers")


def tool_status(
    previous: ToolStatus,
    generation: int,
    accepted: Verdict,
    now: str,
    discovered: list[DiscoveredTool] | None = None,
    isolated: Verdict | None = None,
) -> ToolStatus:
    """A Tool's new status; ``discovered`` (MCP tools) replaces the previous list when given;
    ``isolated`` is the Isolated condition of a code Tool."""
    conditions = set_condition(previous.conditions, "Accepted", accepted.ok, accepted.reason,
                               accepted.message, generation, now)
    if isolated is not None:
        conditions = set_condition(conditions, "Isolated", isolated.ok, isolated.reason,
                                   isolated.message, generation, now)
    return ToolStatus(
        observed_generation=generation,
        conditions=conditions,
        discovered_tools=discovered if discovered is not None else previous.discovered_tools,
        last_discovery_time=now if discovered is not None else previous.last_discovery_time,
    )


def memory_status(previous: MemoryStatus, generation: int, accepted: Verdict, now: str) -> MemoryStatus:
    conditions = set_condition(previous.conditions, "Accepted", accepted.ok, accepted.reason,
                               accepted.message, generation, now)
    return MemoryStatus(observed_generation=generation, conditions=conditions)
