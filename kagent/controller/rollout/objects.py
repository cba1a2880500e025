"""The objects of a canary or blue-green rollout (pure): the stable Deployment and its
ConfigMap at the stable revision, the candidate Deployment and ConfigMap at the new one, the
Agent's Service (blue-green: selecting one revision) and the preview Service, and the
ControllerRevision that keeps a rolled-out spec for ``kagent rollout undo``.

The stable revision's Deployment and ConfigMap come from its ControllerRevision, exactly as they
were rendered then, so a stable pod that restarts during a canary still runs the stable
configuration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kagent.api import Agent
from kagent.api.rollout import GatewayParent
from kagent.api.labels import AGENT_LABEL, REVISION_HASH_LABEL, ROLLOUT_TRACK_LABEL
from kagent.controller.render import RenderedAgent
from kagent.controller.rollout.plan import Plan

Manifest = dict[str, Any]
CANDIDATE_SUFFIX = {"Canary": "canary", "BlueGreen": "preview"}
PREVIEW_SERVICE_SUFFIX = "preview"
STABLE_SERVICE_SUFFIX = "stable"


@dataclass(frozen=True)
class StoredRevision:
    """What a ControllerRevision keeps of one rolled-out revision."""

    number: int
    config_hash: str
    spec: dict[str, Any]
    config_map: Manifest
    deployment: Manifest
    name: str = ""


def _find(objects: list[Manifest], kind: str) -> Manifest:
    return next(o for o in objects if o["kind"] == kind)


def revision_name(agent: str, config_hash: str) -> str:
    return f"{agent}-{config_hash}"


def revision_manifest(agent: Agent, rendered: RenderedAgent, number: int) -> Manifest:
    """A ControllerRevision of the Agent as rendered now (as Deployments keep ReplicaSets and
    StatefulSets keep ControllerRevisions): the spec for undo, the Deployment and ConfigMap to
    keep running it as the stable revision."""
    deployment = _find(rendered.objects, "Deployment")
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision_name(meta["name"], rendered.config_hash),
                     "namespace": meta["namespace"],
                     "labels": {**meta["labels"], REVISION_HASH_LABEL: rendered.config_hash},
                     "ownerReferences": meta["ownerReferences"]},
        "revision": number,
        "data": {"configHash": rendered.config_hash,
                 "spec": agent.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
                 "configMap": _find(rendered.objects, "ConfigMap"), "deployment": deployment},
    }


def stored_revision(obj: Manifest) -> StoredRevision | None:
    """A ControllerRevision read back; None if it is not one of ours."""
    data = obj.get("data") or {}
    try:
        return StoredRevision(int(obj["revision"]), str(data["configHash"]), dict(data["spec"]),
                              dict(data["configMap"]), dict(data["deployment"]),
                              obj["metadata"]["name"])
    except (KeyError, TypeError, ValueError):
        return None


def _with_revision_label(deployment: Manifest, config_hash: str) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    labels[REVISION_HASH_LABEL] = config_hash


def candidate_name(agent: str, strategy: str) -> str:
    return f"{agent}-{CANDIDATE_SUFFIX[strategy]}"


def rollout_objects(rendered: RenderedAgent, plan: Plan, stable: StoredRevision | None,
                    strategy: str, autoscaled: bool, gateway: GatewayParent | None = None
                    ) -> list[Manifest]:
    """The rendered objects with the Deployment, ConfigMap and Service replaced by the
    rollout's: the stable pair at the stable revision, the candidate pair at the new one."""
    objects = [copy.deepcopy(o) for o in rendered.objects]
    deployment = _find(objects, "Deployment")
    config_map = _find(objects, "ConfigMap")
    service = _find(objects, "Service")
    name = deployment["metadata"]["name"]
    out = [o for o in objects if o["kind"] not in ("Deployment", "ConfigMap", "Service")]

    if plan.stable_hash == rendered.config_hash or stable is None:
        stable_deployment, stable_config = copy.deepcopy(deployment), copy.deepcopy(config_map)
    else:
        stable_deployment = copy.deepcopy(stable.deployment)
        stable_config = copy.deepcopy(stable.config_map)
        # identity and owner as now (a revision outlives nothing but its Agent)
        stable_deployment["metadata"] = copy.deepcopy(deployment["metadata"])
        stable_config["metadata"] = copy.deepcopy(config_map["metadata"])
    _with_revision_label(stable_deployment, plan.stable_hash)
    if autoscaled:
        stable_deployment["spec"].pop("replicas", None)
    else:
        stable_deployment["spec"]["replicas"] = plan.stable_replicas
    out += [stable_config, stable_deployment]

    if plan.candidate_hash is not None:
        candidate = candidate_name(name, strategy)
        track = {ROLLOUT_TRACK_LABEL: CANDIDATE_SUFFIX[strategy]}
        candidate_config = copy.deepcopy(config_map)
        candidate_config["metadata"]["name"] = candidate
        candidate_config["metadata"]["labels"].update(track)
        candidate_deployment = copy.deepcopy(deployment)
        candidate_deployment["metadata"]["name"] = candidate
        candidate_deployment["metadata"]["labels"].update(track)
        spec = candidate_deployment["spec"]
        spec["selector"]["matchLabels"].update(track)
        spec["template"]["metadata"]["labels"].update(track)
        _with_revision_label(candidate_deployment, plan.candidate_hash)
        spec["replicas"] = plan.candidate_replicas
        for volume in spec["template"]["spec"]["volumes"]:
            if (volume.get("configMap") or {}).get("name") == name:
                volume["configMap"]["name"] = candidate
        out += [candidate_config, candidate_deployment]

    if plan.service_hash is not None:
        service["spec"]["selector"] = {AGENT_LABEL: name, REVISION_HASH_LABEL: plan.service_hash}
    out.append(service)
    if plan.preview and plan.candidate_hash is not None:
        preview = copy.deepcopy(service)
        preview["metadata"]["name"] = f"{name}-{PREVIEW_SERVICE_SUFFIX}"
        preview["spec"]["selector"] = {AGENT_LABEL: name, REVISION_HASH_LABEL: plan.candidate_hash}
        out.append(preview)
    if plan.routed:
        out += route_objects(service, plan, gateway)
    return out


def route_objects(service: Manifest, plan: Plan, gateway: GatewayParent | None) -> list[Manifest]:
    """Gateway API traffic split: a Service per revision and an HTTPRoute named like the Agent
    whose backends carry the step's weights (only the stable one outside a canary step)."""
    name = service["metadata"]["name"]
    port = service["spec"]["ports"][0]["port"]

    def revision_service(suffix: str, config_hash: str) -> Manifest:
        copied = copy.deepcopy(service)
        copied["metadata"]["name"] = f"{name}-{suffix}"
        copied["spec"]["selector"] = {AGENT_LABEL: name, REVISION_HASH_LABEL: config_hash}
        return copied

    out = [revision_service(STABLE_SERVICE_SUFFIX, plan.stable_hash)]
    backends = [{"name": f"{name}-{STABLE_SERVICE_SUFFIX}", "port": port, "weight": 100}]
    if plan.candidate_hash is not None and plan.status.phase != "Promoting":
        out.append(revision_service(CANDIDATE_SUFFIX["Canary"], plan.candidate_hash))
        canary_weight = plan.status.canary_weight or 0
        backends = [{**backends[0], "weight": 100 - canary_weight},
                    {"name": f"{name}-{CANDIDATE_SUFFIX['Canary']}", "port": port,
                     "weight": canary_weight}]
    meta = service["metadata"]
    spec: Manifest = {"rules": [{"backendRefs": backends}]}
    if gateway is not None:
        parent: Manifest = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "name": gateway.name}
        if gateway.namespace:
            parent["namespace"] = gateway.namespace
        if gateway.section_name:
            parent["sectionName"] = gateway.section_name
        spec["parentRefs"] = [parent]
    out.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": meta["namespace"],
                             "labels": dict(meta.get("labels") or {}),
                             "ownerReferences": copy.deepcopy(meta.get("ownerReferences") or [])},
                "spec": spec})
    return out


def rollout_child_names(agent: str) -> list[tuple[str, str]]:
    """(kind, name) of every object a rollout may add beside the rendered ones (to delete
    those no longer wanted)."""
    names = [("Deployment", candidate_name(agent, s)) for s in CANDIDATE_SUFFIX]
    names += [("ConfigMap", candidate_name(agent, s)) for s in CANDIDATE_SUFFIX]
    return [*names, ("Service", f"{agent}-{PREVIEW_SERVICE_SUFFIX}"),
            ("Service", f"{agent}-{STABLE_SERVICE_SUFFIX}"),
            ("Service", f"{agent}-{CANDIDATE_SUFFIX['Canary']}"), ("HTTPRoute", agent)]
