"""Pure status computation: is a Deployment rolled out, and what do an Agent's conditions say."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kagent.kube.conditions import set_condition
from kagent.controller.render import CONFIG_HASH_ANNOTATION


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
    previous: dict[str, Any] | None,
    generation: int,
    accepted: tuple[bool, str, str],
    rollout: Rollout,
    autoscaling: tuple[bool, str, str] | None,
    endpoint: str | None,
    config_hash: str | None,
    selector: str,
    now: str,
) -> dict[str, Any]:
    """The Agent's new status from what reconcile observed."""
    previous = previous or {}
    conditions = previous.get("conditions")
    ok, reason, message = accepted
    conditions = set_condition(conditions, "Accepted", ok, reason, message, generation, now)
    conditions = set_condition(
        conditions, "Ready", ok and rollout.ready, rollout.reason if ok else "NotAccepted",
        rollout.message if ok else "the Agent is not accepted: " + message, generation, now,
    )
    if autoscaling is not None:
        conditions = set_condition(conditions, "Autoscaling", *autoscaling, generation, now)
    else:
        conditions = [c for c in conditions if c.get("type") != "Autoscaling"]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready_replicas,
        "selector": selector,
    }
    if endpoint:
        status["endpoint"] = endpoint
    if config_hash or previous.get("configHash"):
        status["configHash"] = config_hash or previous.get("configHash")
    return status
