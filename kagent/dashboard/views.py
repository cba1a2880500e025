"""What each page shows of a Kubernetes object: small, JSON-ready projections (pure).

The browser gets these instead of whole objects, so a namespace with thousands of runs stays
light on the wire and in the page. Each projection is keyed by the object's name.
"""

from __future__ import annotations

from typing import Any

FINISHED_PHASES = ("Succeeded", "Failed")


def condition(doc: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for found in (doc.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    return {"name": meta.get("name", ""), "created": meta.get("creationTimestamp"),
            "generation": meta.get("generation")}


def health(doc: dict[str, Any]) -> dict[str, Any]:
    """Ready state and, when not Ready, the first reason a person should act on: an Accepted
    condition that is not True (a missing Tool or Secret) explains more than Ready does."""
    ready = condition(doc, "Ready")
    accepted = condition(doc, "Accepted")
    state = (ready or {}).get("status") or "Unknown"
    blocker = next((c for c in (accepted, ready) if c and c.get("status") != "True"), None)
    if state == "True":
        blocker = None
    if blocker is None and state != "True":
        return {"ready": state, "reason": "Pending",
                "message": "the controller has not reported on it yet"}
    return {"ready": state, "reason": (blocker or {}).get("reason"),
            "message": (blocker or {}).get("message")}


def agent_row(doc: dict[str, Any]) -> dict[str, Any]:
    """An Agent on the overview: name, model, Ready (and why not), replicas."""
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    model = spec.get("model") or {}
    return {
        **_meta(doc),
        "displayName": spec.get("displayName"),
        "description": spec.get("description"),
        "model": f"{model.get('provider', '?')}/{model.get('name', '?')}",
        **health(doc),
        "replicas": status.get("replicas", 0),
        "readyReplicas": status.get("readyReplicas", 0),
        "endpoint": status.get("endpoint"),
    }


def workflow_row(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    accepted = condition(doc, "Accepted") or {}
    return {
        **_meta(doc),
        "description": spec.get("description"),
        "steps": len(spec.get("steps") or []),
        "inputs": spec.get("input") or [],
        "accepted": accepted.get("status") or "Unknown",
        "reason": accepted.get("reason"),
        "message": accepted.get("message"),
        "running": status.get("running") or 0,
        "pending": status.get("pending") or 0,
    }


def run_row(doc: dict[str, Any]) -> dict[str, Any]:
    """A WorkflowRun in a list: its phase and timing, not its outputs."""
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    usage = status.get("usage") or {}
    return {
        **_meta(doc),
        "workflow": (spec.get("workflowRef") or {}).get("name"),
        "phase": status.get("phase") or "Pending",
        "reason": status.get("reason"),
        "message": status.get("message"),
        "startedAt": status.get("startedAt"),
        "finishedAt": status.get("finishedAt"),
        "duration": status.get("duration"),
        "tokens": int(usage.get("inputTokens") or 0) + int(usage.get("outputTokens") or 0),
        "cancelling": bool(spec.get("cancel")) and status.get("phase") not in FINISHED_PHASES,
    }


def run_detail(doc: dict[str, Any]) -> dict[str, Any]:
    """A WorkflowRun on its own page: the row plus input, output, usage and every step's status
    (outputs as the status holds them, bounded by the engine; the full text is fetched on
    demand)."""
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    return {
        **run_row(doc),
        "input": spec.get("input") or {},
        "output": status.get("output"),
        "usage": status.get("usage") or {},
        "steps": status.get("steps") or [],
        "cancelRequested": bool(spec.get("cancel")),
    }


def agent_detail(doc: dict[str, Any]) -> dict[str, Any]:
    """An Agent on its own page: the row plus its spec and every condition."""
    status = doc.get("status") or {}
    return {**agent_row(doc), "spec": doc.get("spec") or {},
            "conditions": status.get("conditions") or [],
            "observedGeneration": status.get("observedGeneration")}


def workflow_detail(doc: dict[str, Any]) -> dict[str, Any]:
    from kagent.dashboard.graph import workflow_graph

    return {**workflow_row(doc), "spec": doc.get("spec") or {},
            "graph": workflow_graph(doc.get("spec") or {})}


def event_row(doc: dict[str, Any]) -> dict[str, Any]:
    involved = doc.get("involvedObject") or {}
    return {
        "name": (doc.get("metadata") or {}).get("name", ""),
        "type": doc.get("type") or "Normal",
        "reason": doc.get("reason"),
        "message": doc.get("message"),
        "object": f"{involved.get('kind', '?')}/{involved.get('name', '?')}",
        "count": doc.get("count") or 1,
        "last": doc.get("lastTimestamp") or doc.get("eventTime")
        or (doc.get("metadata") or {}).get("creationTimestamp"),
    }


def child_row(doc: dict[str, Any]) -> dict[str, Any]:
    """An object the Agent owns, with a one-word state a person can read at a glance."""
    kind = doc.get("kind", "")
    meta = doc.get("metadata") or {}
    state, detail = _child_state(kind, doc)
    return {"name": f"{kind}/{meta.get('name', '')}", "kind": kind,
            "object": meta.get("name", ""), "state": state, "detail": detail}


def _child_state(kind: str, doc: dict[str, Any]) -> tuple[str, str]:
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas") or 0
        updated = status.get("updatedReplicas") or 0
        stuck = next((c for c in status.get("conditions") or []
                      if c.get("type") == "Progressing" and c.get("status") == "False"), None)
        if stuck:
            return "Failed", stuck.get("message") or stuck.get("reason") or ""
        state = "Ready" if ready >= want and updated >= want else "Progressing"
        return state, f"{ready}/{want} ready, {updated} up to date"
    if kind == "Pod":
        phase = status.get("phase") or "Pending"
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        waiting = [cs.get("state", {}).get("waiting", {}).get("reason")
                   for cs in status.get("containerStatuses") or []]
        reason = next((w for w in waiting if w), "")
        return ("Ready" if ready else phase), reason
    if kind == "HorizontalPodAutoscaler":
        replicas = status.get("currentReplicas", 0)
        return "Active", (f"{replicas} replicas (min {spec.get('minReplicas', 1)}, "
                          f"max {spec.get('maxReplicas')})")
    if kind == "Service":
        ports = ", ".join(f"{p.get('name')}:{p.get('port')}" for p in spec.get("ports") or [])
        return "Active", ports
    if kind == "PodDisruptionBudget":
        return "Active", (f"{status.get('currentHealthy', 0)} healthy, "
                          f"{status.get('disruptionsAllowed', 0)} disruptions allowed")
    return "Present", ""
