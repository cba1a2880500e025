"""The I/O of canary and blue-green rollouts, called by the Agent reconciler: keep each
rolled-out spec as a ControllerRevision, read where the Deployments are, scrape the pods'
/metrics when an analysis window opens and closes, and turn the planner's answer into the
objects to apply, the status and the Events.

Pods are scraped where they listen: at their pod IP in a cluster (the controller's
NetworkPolicy must let it reach the agents' metrics port), or — when ``KAGENT_LOCAL_PODS_URL``
names the local pod realiser of ``kagent dev`` and the tests — at the local port it lists.
The window's starting counters are kept in memory: a controller that restarts mid-window opens
a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from lightkube import AsyncClient
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import ControllerRevision
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from kagent.api import Agent, AgentStatus
from kagent.api.labels import (
    AGENT_LABEL,
    CONFIG_HASH_ANNOTATION,
    LOCAL_PODS_URL_ENV,
    ROLLOUT_ACTION_ANNOTATION,
)
from kagent.api.rollout import RolloutSpec, RolloutStatus
from kagent.controller.cache import ControllerCache
from kagent.controller.render import AgentInputs, RenderedAgent, render_agent
from kagent.controller.rollout.evaluate import EvaluationRunner
from kagent.controller.rollout.metrics import MAX_SCRAPE_BYTES, Counts, parse_counts, window
from kagent.controller.rollout.objects import (
    StoredRevision,
    candidate_name,
    revision_manifest,
    rollout_child_names,
    rollout_objects,
    stored_revision,
)
from kagent.controller.rollout.plan import (
    DeploymentState,
    Evaluation,
    Measurement,
    Observed,
    Plan,
    plan,
    replace,
)
from kagent.controller.status import Rollout, deployment_rollout, read_status
from kagent.kube import apply_raw, is_not_found, raw_resource
from kagent.kube.reconcile import ObjectKey, Transition

log = logging.getLogger("kagent.controller.rollout")

HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
GATEWAY_API_RECHECK_SECONDS = 30.0
"""How long the answer to "is the Gateway API installed?" is trusted."""
SCRAPE_TIMEOUT = 3.0
MAX_SCRAPED_PODS = 100
ROLLOUT_STRATEGIES = frozenset({"Canary", "BlueGreen"})


def uses_rollout(agent: Agent) -> bool:
    rollout = agent.spec.rollout
    return rollout is not None and rollout.strategy in ROLLOUT_STRATEGIES


@dataclass(frozen=True)
class RolloutProgress:
    """What a rollout reconcile hands back to the Agent reconciler."""

    rendered: RenderedAgent
    """The objects to apply (the rendered ones, rollout-shaped)."""
    status: RolloutStatus
    in_progress: bool
    reason: str
    message: str
    transitions: tuple[Transition, ...]
    requeue: float | None
    unwanted: tuple[tuple[str, str], ...]
    """(kind, name) of rollout objects to delete once the rest is applied."""

    def readiness(self, observed: Rollout, extra: Deployment | None) -> Rollout:
        """Ready says a new revision is in flight (or was rolled back) rather than the stable
        Deployment's own state."""
        if not self.in_progress:
            return observed
        status = (extra or {}).get("status") or {}
        return Rollout(False, self.reason, self.message,
                       observed.replicas + int(status.get("replicas", 0)),
                       observed.ready_replicas + int(status.get("readyReplicas", 0)))


Deployment = dict[str, Any]


def _state(deployment: Deployment | None) -> DeploymentState | None:
    if deployment is None:
        return None
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    config_hash = (template.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
    return DeploymentState(config_hash, (deployment.get("spec") or {}).get("replicas"),
                           deployment_rollout(deployment, config_hash).ready)


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _requeue(result: Plan, spec: RolloutSpec) -> float | None:
    """When to look again: soon while something is in flight; a Canary Agent at rest every
    :data:`GATEWAY_API_RECHECK_SECONDS` too, so it moves its weights to an HTTPRoute (or back
    to replica shares) when the Gateway API is installed (or removed)."""
    soon = result.requeue if result.requeue is not None else (5.0 if result.in_progress else None)
    if spec.strategy != "Canary":
        return soon
    return min(soon, GATEWAY_API_RECHECK_SECONDS) if soon is not None else GATEWAY_API_RECHECK_SECONDS


class RolloutShell:
    def __init__(self, client: AsyncClient, cache: ControllerCache) -> None:
        self.client = client
        self.cache = cache
        self.local_pods_url = os.environ.get(LOCAL_PODS_URL_ENV) or None
        self.evaluations = EvaluationRunner(client)
        self._gateway_checked: tuple[float, bool] | None = None
        self._windows: dict[tuple[str, str, str], tuple[str, dict[str, Counts]]] = {}
        """(namespace, agent, window id) → (start time, counters per pod at the start)."""

    async def reconcile(self, raw: dict[str, Any], agent: Agent, inputs: AgentInputs) -> RolloutProgress:
        namespace, name = str(agent.metadata.namespace), str(agent.metadata.name)
        spec = agent.spec.rollout
        assert spec is not None
        rendered = render_agent(inputs)
        revisions = await self._revisions(namespace, name)
        previous = read_status(AgentStatus, raw.get("status")).rollout
        stable_deployment = self.cache.get("Deployment", namespace, name)
        if rendered.config_hash not in {r.config_hash for r in revisions.values()}:
            # The first revision is stored only once it is what runs: an Agent that used
            # RollingUpdate before has no stored revision of its older pods to keep beside it.
            running = _state(stable_deployment)
            first = running is None or running.config_hash == rendered.config_hash
            if previous is not None or first or revisions:
                revisions = await self._store_revision(
                    agent, rendered, revisions, spec.revision_history_limit, previous)
        candidate = self.cache.get("Deployment", namespace, candidate_name(name, spec.strategy))
        annotated = (raw["metadata"].get("annotations") or {}).get(ROLLOUT_ACTION_ANNOTATION) or ""
        request = annotated.strip()
        action = request.partition(":")[0]  # the CLI adds ":<request id>"
        autoscaled = agent.spec.scaling is not None
        total = agent.spec.replicas if agent.spec.replicas is not None else (
            max(agent.spec.scaling.min_replicas, 1) if agent.spec.scaling is not None else 1)
        observed = Observed(
            spec=spec, total=total, autoscaled=autoscaled, desired_hash=rendered.config_hash,
            revisions={r.config_hash: r.number for r in revisions.values()}, previous=previous,
            stable=_state(stable_deployment), candidate=_state(candidate),
            now=datetime.now(UTC).replace(tzinfo=None),
            routed=spec.strategy == "Canary" and await self._gateway_api_installed(),
            action=action if action in ("promote", "promote-full", "abort") else None,  # type: ignore[arg-type]
            request=request[:128] or None)
        result = plan(observed)
        window_id = (namespace, name, f"{result.status.canary_hash}/{result.status.current_step}"
                     f"/{result.status.step_started_at if spec.strategy == 'Canary' else ''}")
        if result.open_window:
            await self._open_window(window_id, result)
        if result.measure:
            measurement = await self._measure(window_id, result)
            if measurement is None:
                await self._open_window(window_id, result)
            else:
                evaluation = self._evaluation(namespace, name, spec, result)
                result = plan(replace(observed, measurement=measurement, evaluation=evaluation))
        if result.forget_action:
            await self._forget_action(namespace, name, annotated)
        stable = revisions.get(result.stable_hash)
        objects = rollout_objects(rendered, result, stable, spec.strategy, autoscaled,
                                  spec.canary.gateway if spec.canary else None)
        wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
        unwanted = tuple(k for k in rollout_child_names(name) if k not in wanted)
        transitions: tuple[Transition, ...] = ()
        if result.decision is not None:
            d = result.decision
            transitions = (Transition("Rollout", "False" if d.warning else "True", d.reason,
                                      d.message, warning=d.warning),)
            log.info("rollout of %s/%s: %s: %s", namespace, name, d.reason, d.message)
        rolled_back = result.status.phase in ("RolledBack", "Aborted")
        return RolloutProgress(
            rendered=RenderedAgent(objects, rendered.config_hash, rendered.autoscaler, rendered.endpoint),
            status=result.status, in_progress=result.in_progress,
            reason=str(result.status.phase) if rolled_back else "RolloutInProgress",
            message=result.status.message or "", transitions=transitions,
            requeue=_requeue(result, spec),
            unwanted=unwanted)

    def _evaluation(self, namespace: str, name: str, spec: RolloutSpec, result: Plan
                    ) -> Evaluation | None:
        """The evaluation of the two revisions in flight (started now if it is not running)."""
        settings = spec.canary if spec.strategy == "Canary" else spec.blue_green
        analysis = settings.analysis if settings is not None else None
        if analysis is None or analysis.evaluation is None or result.status.canary_hash is None:
            return None
        key = (namespace, name, result.status.canary_hash, result.status.stable_hash)
        return self.evaluations.result(key, analysis.evaluation, name,
                                       lambda: self._revision_urls(namespace, name))

    async def _gateway_api_installed(self) -> bool:
        """Whether the HTTPRoute CRD is installed (looked up at most every
        :data:`GATEWAY_API_RECHECK_SECONDS`)."""
        now = time.monotonic()
        if self._gateway_checked is None or now - self._gateway_checked[0] > GATEWAY_API_RECHECK_SECONDS:
            try:
                crd = await self.client.get(CustomResourceDefinition, HTTPROUTE_CRD)
                served = any(v.name == "v1" and v.served for v in crd.spec.versions)
            except Exception as error:  # noqa: BLE001 - absent, or not allowed to read CRDs
                if not is_not_found(error):
                    log.warning("cannot tell whether the Gateway API is installed: %s", error)
                served = False
            if self._gateway_checked is None or self._gateway_checked[1] != served:
                log.info("Gateway API HTTPRoute %s: canary weights go on %s", "installed" if served
                         else "not installed", "HTTPRoutes" if served else "replica shares")
            self._gateway_checked = (now, served)
        return self._gateway_checked[1]

    # --- revisions ----------------------------------------------------------------------------

    async def _revisions(self, namespace: str, name: str) -> dict[str, StoredRevision]:
        found: dict[str, StoredRevision] = {}
        async for obj in self.client.list(ControllerRevision, namespace=namespace,
                                          labels={AGENT_LABEL: name}):
            revision = stored_revision(obj.to_dict())
            if revision is not None:
                found[revision.config_hash] = revision
        return found

    async def _store_revision(self, agent: Agent, rendered: RenderedAgent,
                              revisions: dict[str, StoredRevision], limit: int,
                              previous: RolloutStatus | None) -> dict[str, StoredRevision]:
        number = max((r.number for r in revisions.values()), default=0) + 1
        manifest = revision_manifest(agent, rendered, number)
        stored = stored_revision(await apply_raw(self.client, manifest))
        assert stored is not None
        revisions = {**revisions, stored.config_hash: stored}
        keep = {h for h in (previous.stable_hash, previous.canary_hash, previous.previous_hash)
                if h} if previous else set()
        keep.add(stored.config_hash)
        surplus = sorted((r for r in revisions.values() if r.config_hash not in keep),
                         key=lambda r: r.number)[:max(len(revisions) - limit, 0)]
        for old in surplus:
            try:
                await self.client.delete(ControllerRevision, old.name,
                                         namespace=str(agent.metadata.namespace))
            except Exception as error:  # noqa: BLE001 - gone already is fine
                if not is_not_found(error):
                    raise
            revisions.pop(old.config_hash, None)
        return revisions

    async def _forget_action(self, namespace: str, name: str, request: str) -> None:
        """Remove the action annotation only if it still holds ``request``: a newer request
        written meanwhile (a second promote) must survive (JSON patch ``test`` then
        ``remove``; a failed test changes nothing)."""
        from lightkube import ApiError

        from kagent.kube import KAGENT_RESOURCES

        path = "/metadata/annotations/" + ROLLOUT_ACTION_ANNOTATION.replace("~", "~0").replace("/", "~1")
        try:
            await self.client.patch(KAGENT_RESOURCES["Agent"], name,
                                    [{"op": "test", "path": path, "value": request},
                                     {"op": "remove", "path": path}],
                                    namespace=namespace, patch_type=PatchType.JSON)
        except ApiError as error:
            # a failed test is refused as invalid (422, or 500 from some API server versions)
            if error.status.code not in (404, 409, 422, 500):
                raise
            log.info("rollout of %s/%s: a newer request replaced %r", namespace, name, request)

    # --- analysis -----------------------------------------------------------------------------

    async def _open_window(self, window_id: tuple[str, str, str], result: Plan) -> None:
        namespace, name, _ = window_id
        counters = await self._scrape(namespace, name)
        self._windows[window_id] = (_now_text(), {pod: c for pod, (_, c) in counters.items()})
        for stale in [k for k in self._windows if k[:2] == window_id[:2] and k != window_id]:
            del self._windows[stale]

    async def _measure(self, window_id: tuple[str, str, str], result: Plan) -> Measurement | None:
        opened = self._windows.get(window_id)
        if opened is None:
            return None
        start_time, start = opened
        namespace, name, _ = window_id
        now = await self._scrape(namespace, name)
        by_hash: dict[str, dict[str, Counts]] = {}
        for pod, (config_hash, counts) in now.items():
            by_hash.setdefault(config_hash, {})[pod] = counts
        canary_hash, stable_hash = result.status.canary_hash, result.status.stable_hash
        canary = window(by_hash.get(canary_hash or "", {}), start)
        stable = window(by_hash.get(stable_hash or "", {}), start)
        return Measurement(canary, stable, start_time, _now_text())

    async def _pods(self, http: httpx.AsyncClient, namespace: str, name: str,
                    *port_names: str) -> dict[str, tuple[str, str]]:
        """Pod → (config hash, base URL at the first of ``port_names`` it has) for every
        running pod of the Agent (bounded in number)."""
        pods = [p.to_dict() async for p in self.client.list(Pod, namespace=namespace,
                                                             labels={AGENT_LABEL: name})]
        local_ports: dict[str, dict[str, int]] = {}
        if self.local_pods_url:
            try:
                listed = (await http.get(f"{self.local_pods_url.rstrip('/')}/_pods")).json()["pods"]
                local_ports = {p["pod"]: p.get("ports") or {} for p in listed
                               if p.get("namespace") == namespace}
            except (httpx.HTTPError, ValueError, KeyError) as error:
                log.warning("cannot list local pods: %s", error)
        targets: dict[str, tuple[str, str]] = {}
        for pod in pods[:MAX_SCRAPED_PODS]:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            config_hash = (meta.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
            if not config_hash or meta.get("deletionTimestamp"):
                continue
            if self.local_pods_url:
                ports = local_ports.get(meta["name"]) or {}
                host = "127.0.0.1"
            else:
                ports = {p.get("name"): p.get("containerPort") for c in spec.get("containers") or []
                         for p in c.get("ports") or []}
                host = (pod.get("status") or {}).get("podIP")
            port = next((ports[n] for n in port_names if ports.get(n)), None)
            if port and host:
                targets[meta["name"]] = (config_hash, f"http://{host}:{port}")
        return targets

    async def _scrape(self, namespace: str, name: str) -> dict[str, tuple[str, Counts]]:
        """Pod → (config hash, counters) for every running pod of the Agent that answered."""
        async with httpx.AsyncClient(trust_env=False, timeout=SCRAPE_TIMEOUT) as http:
            targets = await self._pods(http, namespace, name, "metrics", "http")
            results = await asyncio.gather(*(self._get(http, f"{url}/metrics")
                                             for _, url in targets.values()))
        return {pod: (config_hash, counts) for (pod, (config_hash, _)), counts
                in zip(targets.items(), results, strict=True) if counts is not None}

    async def _revision_urls(self, namespace: str, name: str) -> dict[str, str]:
        """Config hash → the agent port of one running pod of that revision (the evaluation
        asks each revision directly)."""
        async with httpx.AsyncClient(trust_env=False, timeout=SCRAPE_TIMEOUT) as http:
            targets = await self._pods(http, namespace, name, "http")
        urls: dict[str, str] = {}
        for config_hash, url in sorted(targets.values()):
            urls.setdefault(config_hash, url)
        return urls

    async def _get(self, http: httpx.AsyncClient, url: str) -> Counts | None:
        try:
            async with http.stream("GET", url) as response:
                if response.status_code != 200:
                    return None
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_SCRAPE_BYTES:
                        return None
            return parse_counts(body.decode(errors="replace"))
        except (httpx.HTTPError, ValueError):
            return None

    # --- clean-up -----------------------------------------------------------------------------

    async def delete_unwanted(self, agent: Agent, unwanted: tuple[tuple[str, str], ...] | None,
                              ) -> list[ObjectKey]:
        """Delete the rollout objects no longer wanted (only those this Agent controls); None:
        all of them (the Agent no longer rolls out by Canary or BlueGreen)."""
        namespace = str(agent.metadata.namespace)
        if unwanted is None:
            unwanted = tuple(rollout_child_names(str(agent.metadata.name)))
        deleted: list[ObjectKey] = []
        versions = {"Deployment": "apps/v1", "ConfigMap": "v1", "Service": "v1",
                    "HTTPRoute": "gateway.networking.k8s.io/v1"}
        for kind, name in unwanted:
            if kind == "HTTPRoute":  # not watched: read it, unless the Gateway API is absent
                if not self._gateway_checked or not self._gateway_checked[1]:
                    continue
                try:
                    existing = dict(await self.client.get(raw_resource(versions[kind], kind), name,
                                                          namespace=namespace))
                except Exception as error:  # noqa: BLE001
                    if is_not_found(error):
                        continue
                    raise
            else:
                existing = self.cache.get(kind, namespace, name)
            if existing is None:
                continue
            owners = existing["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == agent.metadata.uid for o in owners):
                continue
            log.info("removing %s %s/%s (rollout)", kind, namespace, name)
            try:
                await self.client.delete(raw_resource(versions[kind], kind), name, namespace=namespace)
            except Exception as error:  # noqa: BLE001
                if not is_not_found(error):
                    raise
            deleted.append((kind, namespace, name))
        return deleted

    def candidate(self, agent: Agent) -> Deployment | None:
        """The candidate Deployment as cached (for the Agent's replica counts)."""
        rollout = agent.spec.rollout
        if rollout is None or rollout.strategy not in ROLLOUT_STRATEGIES:
            return None
        return self.cache.get("Deployment", str(agent.metadata.namespace),
                              candidate_name(str(agent.metadata.name), rollout.strategy))
