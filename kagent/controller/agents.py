"""Agent reconcile: read the Agent, resolve what it refers to, render, apply, prune, report.

Level-based and idempotent, as in controller-runtime: it can run any number of times, from any
state, and converges on the same children and status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from kagent.api import Agent
from kagent.api.manifests import ManifestError, parse_resource
from kagent.kube.conditions import condition, now_rfc3339
from kagent.controller.render import AGENT_LABEL, autoscaler_for, render_agent
from kagent.controller.resolve import Dependency, resolve_agent
from kagent.controller.status import Rollout, agent_status, deployment_rollout
from kagent.kube import KAGENT_RESOURCES, ScaledObject, apply, is_not_found

log = logging.getLogger("kagent.controller.agents")

AgentRes = KAGENT_RESOURCES["Agent"]
PRUNABLE = {
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "ScaledObject": ScaledObject,
    "PodDisruptionBudget": PodDisruptionBudget,
}


@dataclass
class AgentOutcome:
    """What one reconcile learned, for the caller's index, events and requeue decision."""

    dependencies: set[Dependency]
    transitions: list[tuple[str, str, str, str]]
    """(condition type, new status, reason, message) for every condition whose status changed."""
    requeue_after: float | None


async def _get_raw(client: AsyncClient, res: Any, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return (await client.get(res, name, namespace=namespace)).to_dict()
    except Exception as error:  # noqa: BLE001 - 404s of unserved APIs are not ApiErrors
        if is_not_found(error):
            return None
        raise


async def _prune(client: AsyncClient, agent: Agent, wanted: set[str], keda_available: bool) -> None:
    """Delete children of kinds no longer wanted — only those this Agent owns."""
    for kind, res in PRUNABLE.items():
        if kind in wanted or (kind == "ScaledObject" and not keda_available):
            continue
        existing = await _get_raw(client, res, str(agent.metadata.name), str(agent.metadata.namespace))
        if existing is None:
            continue
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == agent.metadata.uid for o in owners):
            log.info("pruning %s %s/%s", kind, agent.metadata.namespace, agent.metadata.name)
            try:
                await client.delete(res, str(agent.metadata.name), namespace=agent.metadata.namespace)
            except Exception as error:  # noqa: BLE001
                if not is_not_found(error):
                    raise


def _autoscaling_condition(agent: Agent, keda_available: bool) -> tuple[bool, str, str] | None:
    scaling = agent.spec.scaling
    if scaling is None:
        return None
    wants_keda = scaling.keda is not None and scaling.keda.enabled
    if wants_keda and not keda_available:
        return (
            False,
            "KEDANotInstalled",
            "scaling.keda.enabled is set but KEDA is not installed (no keda.sh/v1alpha1 "
            "ScaledObject API); the Deployment runs minReplicas pods with no autoscaler until "
            "KEDA is installed",
        )
    kind = "KEDA ScaledObject" if autoscaler_for(scaling, keda_available) == "keda" else "HorizontalPodAutoscaler"
    return True, "AutoscalerConfigured", f"replicas are managed by a {kind}"


async def reconcile_agent(
    client: AsyncClient, namespace: str, name: str, keda_available: bool, image: str
) -> AgentOutcome | None:
    """Bring one Agent's children and status in line with its spec. None: the Agent is gone."""
    raw = await _get_raw(client, AgentRes, name, namespace)
    if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
        return None
    generation = raw["metadata"].get("generation", 0)
    try:
        agent = parse_resource(raw)
    except ManifestError as error:
        accepted = (False, "InvalidSpec", str(error).replace("\n", " "))
        return await _write_status(client, raw, generation, accepted, None, None, None, set(), keda_available)
    assert isinstance(agent, Agent)
    resolution = await resolve_agent(client, agent, keda_available, image)
    config_hash: str | None = None
    endpoint: str | None = None
    if resolution.inputs is None:
        # Keep the children as they were: a missing reference must not take a running agent down.
        missing = ", ".join(resolution.missing)
        accepted = (False, resolution.reason, f"not found or invalid: {missing}")
    else:
        rendered = render_agent(resolution.inputs)
        for manifest in rendered.objects:
            await apply(client, manifest)
        await _prune(client, agent, {o["kind"] for o in rendered.objects}, keda_available)
        config_hash, endpoint = rendered.config_hash, rendered.endpoint
        accepted = (True, "Resolved", "every referenced Tool, Memory and Secret resolves")
    return await _write_status(
        client, raw, generation, accepted, agent, config_hash, endpoint,
        resolution.dependencies, keda_available,
    )


async def _write_status(
    client: AsyncClient,
    raw: dict[str, Any],
    generation: int,
    accepted: tuple[bool, str, str],
    agent: Agent | None,
    config_hash: str | None,
    endpoint: str | None,
    dependencies: set[Dependency],
    keda_available: bool,
) -> AgentOutcome:
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    previous = raw.get("status") or {}
    deployment = await _get_raw(client, Deployment, name, namespace)
    expected_hash = config_hash if config_hash is not None else previous.get("configHash")
    rollout: Rollout = deployment_rollout(deployment, expected_hash)
    autoscaling = _autoscaling_condition(agent, keda_available) if agent is not None else None
    status = agent_status(
        previous, generation, accepted, rollout, autoscaling,
        endpoint or previous.get("endpoint"), config_hash, f"{AGENT_LABEL}={name}", now_rfc3339(),
    )
    transitions = []
    for cond in status["conditions"]:
        before = condition(previous.get("conditions"), cond["type"])
        if before is None or before.get("status") != cond["status"] or before.get("reason") != cond["reason"]:
            transitions.append((cond["type"], cond["status"], cond["reason"], cond["message"]))
    if _status_changed(previous, status):
        await client.patch(
            AgentRes.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
    # Not rolled out yet: look again soon even if no watch event arrives.
    requeue = None if rollout.ready or not accepted[0] else 5.0
    return AgentOutcome(dependencies=dependencies, transitions=transitions, requeue_after=requeue)


def _status_changed(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    def strip(s: dict[str, Any]) -> dict[str, Any]:
        return {
            **s,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []
            ],
        }

    return strip(previous) != strip(status)
