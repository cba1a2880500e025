"""Agent reconcile: read the Agent and what it refers to from the cache, render, apply what
changed, prune, report.

Level-based and idempotent, as in controller-runtime: it can run any number of times, from any
state, and converges on the same children and status. It reads nothing from the API server: the
cache holds the Agent, its Tools, Memory and Secrets and every child; it writes only children that
differ from what it last applied (see :class:`~kagent.controller.cache.AppliedChildren`) and a
status that changed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from kagent.api import Agent, AgentStatus
from kagent.api.manifests import ManifestError
from kagent.controller.cache import (
    AppliedChildren,
    ControllerCache,
    manifest_digest,
    trim_deployment,
)
from kagent.controller.metrics import APPLIES
from kagent.controller.render import AGENT_LABEL, AgentInputs, autoscaler_for, render_agent
from kagent.controller.resolve import parse_cached, resolve_agent
from kagent.controller.status import (
    READY_PROGRESS_REASONS,
    agent_status,
    deployment_rollout,
    read_status,
    status_changed,
)
from kagent.kube import apply_raw, is_not_found, raw_resource
from kagent.kube.conditions import now_rfc3339, transitions
from kagent.kube.reconcile import ObjectKey, Result, Verdict

log = logging.getLogger("kagent.controller.agents")

PRUNABLE = {
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ScaledObject": "keda.sh/v1alpha1",
    "PodDisruptionBudget": "policy/v1",
}
FIRST_APPLIED = frozenset({"ServiceAccount", "ConfigMap"})
"""Applied before the other children: the pods the Deployment starts use them."""
ROLLOUT_POLL_SECONDS = 5.0
"""Not rolled out yet: look again this soon even if no watch event arrives."""


def autoscaling_verdict(agent: Agent, keda_available: bool) -> Verdict | None:
    scaling = agent.spec.scaling
    if scaling is None:
        return None
    wants_keda = scaling.keda is not None and scaling.keda.enabled
    if wants_keda and not keda_available:
        return Verdict(
            False,
            "KEDANotInstalled",
            "scaling.keda.enabled is set but KEDA is not installed (no keda.sh/v1alpha1 "
            "ScaledObject API); the Deployment runs minReplicas pods with no autoscaler until "
            "KEDA is installed",
        )
    kind = "KEDA ScaledObject" if autoscaler_for(scaling, keda_available) == "keda" else "HorizontalPodAutoscaler"
    return Verdict(True, "AutoscalerConfigured", f"replicas are managed by a {kind}")


@dataclass(slots=True)
class _LastRender:
    """What the last render of an Agent produced, to skip rendering when nothing it reads changed."""

    inputs: str
    children: tuple[tuple[ObjectKey, str], ...]
    """(child key, digest of its manifest)."""
    config_hash: str
    endpoint: str


def inputs_digest(inputs: AgentInputs) -> str:
    """Changes whenever anything the rendering reads changes: the Agent's identity and spec
    (its generation), its Tools' and Memory's specs, the Secret digest, KEDA, the image."""
    def ident(resource: Any) -> list[Any]:
        meta = resource.metadata
        return [meta.namespace, meta.name, meta.uid, meta.generation]

    return manifest_digest({
        "agent": ident(inputs.agent), "tools": [ident(t) for t in inputs.tools],
        "memory": ident(inputs.memory) if inputs.memory is not None else None,
        "secrets": inputs.secret_digest, "keda": inputs.keda_available, "image": inputs.image,
    })


class AgentReconciler:
    def __init__(self, client: AsyncClient, cache: ControllerCache, image: str) -> None:
        self.client = client
        self.cache = cache
        self.image = image
        self.applied = AppliedChildren()
        self._last: dict[ObjectKey, _LastRender] = {}

    def forget_all(self) -> None:
        """Drop what this process remembers applying (a new leader starts from the cluster)."""
        self.applied = AppliedChildren()
        self._last.clear()

    async def reconcile(self, key: ObjectKey) -> Result:
        _, namespace, name = key
        raw = self.cache.get("Agent", namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self._last.pop(key, None)
            return Result.forget()
        keda_available = self.cache.keda_available
        try:
            agent = parse_cached(raw)
        except ManifestError as error:
            invalid = Verdict(False, "InvalidSpec", str(error).replace("\n", " "))
            return await self._report(raw, invalid, None, None, None, None, frozenset(), keda_available)
        assert isinstance(agent, Agent)
        resolution = resolve_agent(self.cache, agent, keda_available, self.image)
        deployment: dict[str, Any] | None = None
        config_hash = endpoint = None
        if resolution.inputs is None:
            # Keep the children as they were: a missing reference must not take a running agent down.
            accepted = Verdict(False, resolution.reason, f"not found or invalid: {', '.join(resolution.missing)}")
        else:
            digest = inputs_digest(resolution.inputs)
            last = self._last.get(key)
            if last is None or last.inputs != digest or not self._children_up_to_date(last):
                last, deployment = await self._render_and_apply(key, resolution.inputs, digest)
            await self._prune(agent, {child[0] for child, _ in last.children}, keda_available)
            config_hash, endpoint = last.config_hash, last.endpoint
            accepted = Verdict(True, "Resolved", "every referenced Tool, Memory and Secret resolves")
        return await self._report(raw, accepted, agent, config_hash, endpoint, deployment,
                                  frozenset(resolution.dependencies), keda_available)

    def _children_up_to_date(self, last: _LastRender) -> bool:
        return all(self.applied.up_to_date(child, desired, self.cache.store(child[0]))
                   for child, desired in last.children)

    async def _render_and_apply(self, key: ObjectKey, inputs: AgentInputs,
                                digest: str) -> tuple[_LastRender, dict[str, Any] | None]:
        """Render and apply what changed: first what the pods use (ServiceAccount, ConfigMap),
        then the rest, each group at once."""
        rendered = render_agent(inputs)
        planned = []
        for manifest in rendered.objects:
            meta = manifest["metadata"]
            planned.append(((manifest["kind"], meta["namespace"], meta["name"]), manifest_digest(manifest), manifest))
        answers: dict[ObjectKey, dict[str, Any] | None] = {}
        for group in (FIRST_APPLIED, None):
            batch = [p for p in planned if (p[0][0] in FIRST_APPLIED) == (group is not None)]
            results = await asyncio.gather(*(self._apply(child, manifest, desired)
                                             for child, desired, manifest in batch), return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            answers.update((child, answer) for (child, _, _), answer in zip(batch, results, strict=True))
        deployment = next((trim_deployment(answer) for (kind, _, _), answer in answers.items()
                           if kind == "Deployment" and answer is not None), None)
        last = _LastRender(digest, tuple((child, desired) for child, desired, _ in planned),
                           rendered.config_hash, rendered.endpoint)
        self._last[key] = last
        return last, deployment

    async def _apply(self, key: ObjectKey, manifest: dict[str, Any], desired: str) -> dict[str, Any] | None:
        """Server-side apply a child unless it is already as wanted; the server's answer, or None."""
        store = self.cache.store(manifest["kind"])
        if self.applied.up_to_date(key, desired, store):
            APPLIES.labels(manifest["kind"], "unchanged").inc()
            return None
        before = self.applied.before_apply(key, store)
        answer = await apply_raw(self.client, manifest)
        APPLIES.labels(manifest["kind"], "applied").inc()
        self.applied.applied(key, desired, answer, before)
        return answer

    async def _prune(self, agent: Agent, wanted: set[str], keda_available: bool) -> None:
        """Delete children of kinds no longer wanted — only those this Agent controls."""
        namespace, name = str(agent.metadata.namespace), str(agent.metadata.name)
        for kind, api_version in PRUNABLE.items():
            if kind in wanted or (kind == "ScaledObject" and not keda_available):
                continue
            existing = self.cache.get(kind, namespace, name)
            if existing is None:
                continue
            owners = existing["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == agent.metadata.uid for o in owners):
                continue
            log.info("pruning %s %s/%s", kind, namespace, name)
            try:
                await self.client.delete(raw_resource(api_version, kind), name, namespace=namespace)
            except Exception as error:  # noqa: BLE001 - 404s of unserved APIs are not ApiErrors
                if not is_not_found(error):
                    raise
            self.applied.forget((kind, namespace, name))

    async def _report(
        self,
        raw: dict[str, Any],
        accepted: Verdict,
        agent: Agent | None,
        config_hash: str | None,
        endpoint: str | None,
        deployment: dict[str, Any] | None,
        dependencies: frozenset[ObjectKey],
        keda_available: bool,
    ) -> Result:
        meta = raw["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous = read_status(AgentStatus, raw.get("status"))
        if deployment is None:
            deployment = self.cache.get("Deployment", namespace, name)
        rollout = deployment_rollout(deployment, config_hash or previous.config_hash)
        autoscaling = autoscaling_verdict(agent, keda_available) if agent is not None else None
        status = agent_status(
            previous, meta.get("generation", 0), accepted, rollout, autoscaling, endpoint,
            config_hash, f"{AGENT_LABEL}={name}", now_rfc3339(),
        )
        if status_changed(previous, status):
            await self.cache.write_status(self.client, raw, status)
        requeue = None if rollout.ready or not accepted.ok else ROLLOUT_POLL_SECONDS
        return Result(requeue_after=requeue, dependencies=dependencies,
                      transitions=transitions(previous.conditions, status.conditions, READY_PROGRESS_REASONS))
