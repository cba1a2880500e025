"""Translate a resolved Agent into the Kubernetes objects that run it.

Pure: no I/O, no clock, no randomness — the same inputs always give the same manifests, which is
what golden tests lock down and what server-side apply needs to be a no-op when nothing changed.
The controller gathers the inputs (Tools, Memory, Secret digests, whether KEDA is installed) and
applies the result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from kagent.api import Agent, Budget, Memory, Tool
from kagent.api.agent import ScalingSpec
from kagent.api.base import API_VERSION, GROUP, SecretKeySelector
from kagent.api.labels import (
    AGENT_AUTH_CLUSTER_ROLE,
    AGENT_LABEL,
    AGENT_TOKEN_AUDIENCE,
    AGENT_TOKEN_FILE_ENV,
    CONFIG_HASH_ANNOTATION,
    CONTROLLER_NAMESPACE,
    MANAGED_BY_LABEL,
    MANAGER,
    NAME_LABEL,
)
from kagent.api.memory import MemorySpec
from kagent.api.secrets import TRACING_SECRET_KEYS, iter_secret_refs, secret_env_name, unique_refs

HTTP_PORT = 8080
SERVICE_PORT = 80
CONFIG_DIR = "/etc/kagent"
CONFIG_KEY = "agent.yaml"
MANAGED_BY = {MANAGED_BY_LABEL: MANAGER}
DEFAULT_IMAGE = "ghcr.io/kagent-operator/kagent:0.1.0"
AGENT_URL_TEMPLATE = "http://{name}.{namespace}.svc.cluster.local"
AGENT_TOKEN_DIR = "/var/run/secrets/kagent.dev"
AGENT_TOKEN_SECONDS = 3600

Autoscaler = Literal["hpa", "keda"]
SCALE_FIELDS = frozenset({"replicas", "scaling"})
"""Agent spec fields that say how many pods run, not what a pod runs: left out of the runtime
config (and so of the config hash), so scaling never restarts a pod."""


@dataclass(frozen=True)
class NetworkPolicySettings:
    """Who besides an agent's own namespace may reach agents: set once for the controller (the
    chart's values), the same for every agent."""

    controller_namespace: str = CONTROLLER_NAMESPACE
    controller_pod_labels: dict[str, str] = field(
        default_factory=lambda: {NAME_LABEL: MANAGER, "app.kubernetes.io/component": "controller"})
    """Labels of the controller's pods (the workflow engine calls agents from there)."""
    allow_from: tuple[dict[str, Any], ...] = ()
    """Extra NetworkPolicy peers allowed on every agent's serving port (chart values)."""
    metrics_from: tuple[dict[str, Any], ...] = (
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},)
    """Peers allowed on the metrics port (the monitoring namespaces)."""


@dataclass(frozen=True)
class AgentInputs:
    """Everything the rendering depends on, gathered by the controller."""

    agent: Agent
    tools: list[Tool] = field(default_factory=list)
    """The Tool resources the agent names (kind Tool), in the agent's order."""
    memory: Memory | None = None
    """The Memory named by memoryRef, if any."""
    budgets: list[Budget] = field(default_factory=list)
    """The Budgets covering the agent: rendered into its config, which the runtime enforces."""
    secret_digest: str = ""
    """A digest of the referenced Secret keys' values, so rotation changes the config hash."""
    keda_available: bool = False
    """Whether the KEDA CRDs are installed."""
    image: str = DEFAULT_IMAGE
    """Image of the agent runtime (the controller's own image unless the Agent overrides it)."""
    network: NetworkPolicySettings = field(default_factory=NetworkPolicySettings)
    """The controller-wide part of every agent's NetworkPolicy."""


@dataclass(frozen=True)
class RenderedAgent:
    objects: list[dict[str, Any]]
    config_hash: str
    autoscaler: Autoscaler | None
    endpoint: str


def effective_memory(inputs: AgentInputs) -> MemorySpec | None:
    if inputs.agent.spec.memory is not None:
        return inputs.agent.spec.memory
    return inputs.memory.spec if inputs.memory is not None else None


def agent_secret_refs(inputs: AgentInputs) -> list[SecretKeySelector]:
    """Every Secret key the agent's pods need, from the Agent, its Tools and its Memory."""
    refs = list(iter_secret_refs(inputs.agent.spec))
    for tool in inputs.tools:
        refs.extend(iter_secret_refs(tool.spec))
    if inputs.memory is not None:
        refs.extend(iter_secret_refs(inputs.memory.spec))
    for budget in inputs.budgets:
        refs.extend(iter_secret_refs(budget.spec))
    tracing = inputs.agent.spec.observability and inputs.agent.spec.observability.tracing
    if tracing and tracing.enabled and tracing.secret_ref:
        refs.extend(
            SecretKeySelector(name=tracing.secret_ref.name, key=key)
            for key in TRACING_SECRET_KEYS[tracing.provider]
        )
    return unique_refs(refs)


def _clean(resource: Agent | Tool | Memory) -> dict[str, Any]:
    """A resource as the runtime reads it: spec and identity only, no status or server fields,
    and for an Agent nothing about how many pods run (see :data:`SCALE_FIELDS`)."""
    meta = resource.metadata
    exclude = set(SCALE_FIELDS) if isinstance(resource, Agent) else None
    return {
        "apiVersion": API_VERSION,
        "kind": resource.kind,
        "metadata": {"name": meta.name, "namespace": meta.namespace},
        "spec": resource.spec.model_dump(by_alias=True, exclude_none=True, mode="json", exclude=exclude),
    }


def _budget_document(budget: Budget) -> dict[str, Any]:
    """A covering Budget as the runtime reads it. The controller chose it, so its selectors are
    left out: the runtime applies every Budget in its config (an Agent's labels are not there
    for it to match)."""
    spec = budget.spec.model_dump(by_alias=True, exclude_none=True, mode="json",
                                  exclude={"agent_selector", "workflow_selector"})
    meta = budget.metadata
    return {"apiVersion": API_VERSION, "kind": "Budget",
            "metadata": {"name": meta.name, "namespace": meta.namespace}, "spec": spec}


def runtime_config(inputs: AgentInputs) -> str:
    """The ConfigMap payload: the manifests ``kagent runtime -f`` reads, secrets excluded."""
    documents = [_clean(inputs.agent), *(_clean(t) for t in inputs.tools)]
    if inputs.memory is not None:
        documents.append(_clean(inputs.memory))
    documents.extend(_budget_document(b) for b in inputs.budgets)
    return yaml.safe_dump_all(documents, sort_keys=False)


def config_hash(config: str, inputs: AgentInputs) -> str:
    payload = json.dumps(
        {"config": config, "secrets": inputs.secret_digest, "image": _image(inputs)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _image(inputs: AgentInputs) -> str:
    pod = inputs.agent.spec.pod
    return pod.image if pod and pod.image else inputs.image


def _owner(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Agent",
        "name": agent.metadata.name,
        "uid": agent.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(agent: Agent) -> dict[str, str]:
    return {AGENT_LABEL: str(agent.metadata.name)}


def _labels(agent: Agent) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kagent-agent",
        "app.kubernetes.io/instance": str(agent.metadata.name),
        **MANAGED_BY,
        **selector_labels(agent),
    }


def _metadata(agent: Agent, kind_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": agent.metadata.name,
        "namespace": agent.metadata.namespace,
        "labels": {**_labels(agent), **(kind_labels or {})},
        "ownerReferences": [_owner(agent)],
    }


def _metrics_port(agent: Agent) -> int | None:
    observability = agent.spec.observability
    metrics = observability.metrics if observability else None
    if metrics is not None and not metrics.enabled:
        return None
    return metrics.port if metrics is not None else 9090


def autoscaler_for(scaling: ScalingSpec | None, keda_available: bool) -> Autoscaler | None:
    """Which autoscaler owns the replicas: KEDA when asked for (and installed), else an HPA."""
    if scaling is None:
        return None
    if scaling.keda is not None and scaling.keda.enabled:
        return "keda" if keda_available else None
    return "hpa"


RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def auth_required(agent: Agent) -> bool:
    """Whether the agent checks its callers (everything but an explicit ``auth.mode: none``)."""
    return agent.spec.auth is None or agent.spec.auth.mode != "none"


def tool_agents(agent: Agent) -> list[str]:
    """The Agents this agent calls as tools (same namespace)."""
    return [ref.name for ref in agent.spec.tools or [] if ref.kind == "Agent"]


def _env(inputs: AgentInputs, refs: list[SecretKeySelector]) -> list[dict[str, Any]]:
    agent = inputs.agent
    env: list[dict[str, Any]] = [
        {"name": "KAGENT_AGENT_NAME", "value": agent.metadata.name},
        {"name": "KAGENT_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KAGENT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KAGENT_AGENT_URL_TEMPLATE", "value": AGENT_URL_TEMPLATE},
    ]
    if tool_agents(agent):
        env.append({"name": AGENT_TOKEN_FILE_ENV, "value": f"{AGENT_TOKEN_DIR}/token"})
    env.extend(
        {
            "name": secret_env_name(ref),
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        }
        for ref in refs
    )
    pod = agent.spec.pod
    if pod and pod.env:
        env.extend(e.model_dump(by_alias=True, exclude_none=True, mode="json") for e in pod.env)
    return env


def _container(inputs: AgentInputs, refs: list[SecretKeySelector]) -> dict[str, Any]:
    agent = inputs.agent
    metrics_port = _metrics_port(agent)
    args = ["runtime", "-f", f"{CONFIG_DIR}/{CONFIG_KEY}", "--port", str(HTTP_PORT)]
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if metrics_port is not None and metrics_port != HTTP_PORT:
        args += ["--metrics-port", str(metrics_port)]
        ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
    pod = agent.spec.pod
    security = dict(RESTRICTED_CONTAINER_SECURITY)
    if pod and pod.security_context:
        security.update(pod.security_context)
    container: dict[str, Any] = {
        "name": "agent",
        "image": _image(inputs),
        "args": args,
        "ports": ports,
        "env": _env(inputs, refs),
        # Liveness starts counting only once the runtime has started: on a busy node the
        # imports alone can outlast three liveness periods, and killing it then only loops.
        # Up to ten minutes to start, and five seconds to answer: on a node busy starting many
        # pods at once (a rollout of every agent) a Python runtime starves for CPU, and a probe
        # that kills it then only restarts the same slow start.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        # Keep serving a few seconds after termination starts: the Service's endpoints and
        # kube-proxy's rules need that long to stop sending calls here (a rollout refused 2 of
        # 153 calls without it). A custom image without /bin/sleep only logs a failed hook.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "5"]}}},
        "securityContext": security,
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if tool_agents(agent):
        container["volumeMounts"].append(
            {"name": "agent-token", "mountPath": AGENT_TOKEN_DIR, "readOnly": True})
    if pod and pod.image_pull_policy:
        container["imagePullPolicy"] = pod.image_pull_policy
    if agent.spec.resources is not None:
        container["resources"] = agent.spec.resources.model_dump(
            by_alias=True, exclude_none=True, mode="json"
        )
    return container


def _pod_template(inputs: AgentInputs, refs: list[SecretKeySelector], digest: str) -> dict[str, Any]:
    agent = inputs.agent
    pod = agent.spec.pod
    annotations = {CONFIG_HASH_ANNOTATION: digest}
    labels = dict(_labels(agent))
    if pod and pod.labels:
        labels = {**pod.labels, **labels}
    if pod and pod.annotations:
        annotations = {**pod.annotations, **annotations}
    spec: dict[str, Any] = {
        "serviceAccountName": agent.metadata.name,
        # The API token only where the runtime checks callers (TokenReview, SubjectAccessReview).
        "automountServiceAccountToken": auth_required(agent),
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            "fsGroup": 65532,
        },
        "containers": [_container(inputs, refs)],
        "volumes": [
            {"name": "config", "configMap": {"name": agent.metadata.name}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if tool_agents(agent):
        # Its own identity for calling the agents it uses as tools: a short-lived token only
        # agents accept (audience kagent.dev), rotated by the kubelet — never the API token.
        spec["volumes"].append({"name": "agent-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": AGENT_TOKEN_AUDIENCE,
                                     "expirationSeconds": AGENT_TOKEN_SECONDS, "path": "token"}},
        ]}})
    if pod:
        if pod.node_selector:
            spec["nodeSelector"] = pod.node_selector
        if pod.tolerations:
            spec["tolerations"] = pod.tolerations
        if pod.affinity:
            spec["affinity"] = pod.affinity
        if pod.priority_class_name:
            spec["priorityClassName"] = pod.priority_class_name
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def _deployment(
    inputs: AgentInputs, refs: list[SecretKeySelector], digest: str, autoscaler: Autoscaler | None
) -> dict[str, Any]:
    agent = inputs.agent
    rollout = agent.spec.rollout
    max_surge = rollout.max_surge if rollout and rollout.max_surge is not None else "25%"
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(agent)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": max_surge},
        },
        "revisionHistoryLimit": 5,
        "template": _pod_template(inputs, refs, digest),
    }
    if autoscaler is None:
        # With an autoscaler the replica count is its to set; we leave the field unowned.
        scaling = agent.spec.scaling
        spec["replicas"] = (
            agent.spec.replicas
            if agent.spec.replicas is not None
            else max(scaling.min_replicas, 1) if scaling is not None else 1
        )
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(agent), "spec": spec}


def _service(agent: Agent) -> dict[str, Any]:
    ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    metrics_port = _metrics_port(agent)
    if metrics_port is not None and metrics_port != HTTP_PORT:
        ports.append({"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(agent),
        "spec": {"type": "ClusterIP", "selector": selector_labels(agent), "ports": ports},
    }


def _hpa(agent: Agent, scaling: ScalingSpec) -> dict[str, Any]:
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": metric.type,
                "target": {"type": "Utilization", "averageUtilization": metric.target.average_utilization},
            },
        }
        for metric in scaling.metrics or []
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(agent),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": agent.metadata.name},
            "minReplicas": max(scaling.min_replicas, 1),
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }


def _scaled_object(agent: Agent, scaling: ScalingSpec) -> dict[str, Any]:
    keda = scaling.keda
    assert keda is not None
    triggers: list[dict[str, Any]] = [
        {
            "type": metric.type,
            "metricType": "Utilization",
            "metadata": {"value": str(metric.target.average_utilization)},
        }
        for metric in scaling.metrics or []
    ]
    for trigger in keda.triggers or []:
        entry: dict[str, Any] = {"type": trigger.type, "metadata": dict(trigger.metadata)}
        if trigger.authentication_ref is not None:
            entry["authenticationRef"] = {"name": trigger.authentication_ref.name}
        triggers.append(entry)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": agent.metadata.name},
        "minReplicaCount": scaling.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
        "triggers": triggers,
    }
    if keda.polling_interval is not None:
        spec["pollingInterval"] = keda.polling_interval
    if keda.cooldown_period is not None:
        spec["cooldownPeriod"] = keda.cooldown_period
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _metadata(agent), "spec": spec}


def _min_available_replicas(agent: Agent) -> int:
    if agent.spec.scaling is not None:
        return agent.spec.scaling.min_replicas
    return agent.spec.replicas if agent.spec.replicas is not None else 1


def _pdb(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(agent),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(agent)}},
    }


def _network_policy(inputs: AgentInputs) -> dict[str, Any]:
    """Ingress to the agent's pods: the serving port from its own namespace, the Kagent
    controller and the allowed peers; the metrics port from the monitoring namespaces. Anything
    else is dropped (egress is left open: agents call models, tools and other agents)."""
    agent, network = inputs.agent, inputs.network
    spec = agent.spec.network_policy
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": network.controller_namespace}},
                  "podSelector": {"matchLabels": dict(network.controller_pod_labels)}}
    peers: list[dict[str, Any]] = [{"podSelector": {}}, controller, *(dict(peer) for peer in network.allow_from)]
    if spec is not None and spec.allow_from:
        peers.extend(peer.model_dump(by_alias=True, exclude_none=True, mode="json") for peer in spec.allow_from)
    ingress: list[dict[str, Any]] = [{"ports": [{"protocol": "TCP", "port": HTTP_PORT}], "from": peers}]
    metrics_port = _metrics_port(agent)
    if metrics_port is not None and metrics_port != HTTP_PORT:
        # The monitoring namespaces scrape it; so does the controller (rollout analysis).
        ingress.append({"ports": [{"protocol": "TCP", "port": metrics_port}],
                        "from": [controller, *(dict(peer) for peer in network.metrics_from)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(agent),
        "spec": {"podSelector": {"matchLabels": selector_labels(agent)}, "policyTypes": ["Ingress"],
                 "ingress": ingress},
    }


def _tool_access(agent: Agent) -> list[dict[str, Any]]:
    """A Role allowing the agent's ServiceAccount to invoke exactly the agents it uses as
    tools, and its RoleBinding: the default RBAC of agent-as-tool."""
    names = sorted(set(tool_agents(agent)))
    if not names:
        return []
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _metadata(agent),
            "rules": [{"apiGroups": [GROUP], "resources": ["agents"],
                       "verbs": ["invoke"], "resourceNames": names}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": _metadata(agent),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": agent.metadata.name},
               "subjects": [{"kind": "ServiceAccount", "name": agent.metadata.name,
                             "namespace": agent.metadata.namespace}]}
    return [role, binding]


def auth_binding_name(namespace: str, name: str) -> str:
    return f"{AGENT_AUTH_CLUSTER_ROLE}:{namespace}:{name}"


def auth_binding(agent: Agent, cluster_role: str = AGENT_AUTH_CLUSTER_ROLE) -> dict[str, Any] | None:
    """The ClusterRoleBinding that lets the agent check its callers (None with
    ``auth.mode: none``). Cluster-scoped, so it cannot be owned by the Agent: the controller
    applies it beside the owned children and deletes it with the Agent."""
    if not auth_required(agent):
        return None
    namespace, name = str(agent.metadata.namespace), str(agent.metadata.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": auth_binding_name(namespace, name),
                     "labels": {**_labels(agent), f"{GROUP}/namespace": namespace}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def render_agent(inputs: AgentInputs) -> RenderedAgent:
    """All objects an Agent owns, in apply order (a ServiceAccount before the pods that use it)."""
    agent = inputs.agent
    refs = agent_secret_refs(inputs)
    config = runtime_config(inputs)
    digest = config_hash(config, inputs)
    autoscaler = autoscaler_for(agent.spec.scaling, inputs.keda_available)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(agent),
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(agent), "data": {CONFIG_KEY: config}},
        *_tool_access(agent),
        _deployment(inputs, refs, digest, autoscaler),
        _service(agent),
    ]
    if autoscaler == "hpa" and agent.spec.scaling is not None:
        objects.append(_hpa(agent, agent.spec.scaling))
    if autoscaler == "keda" and agent.spec.scaling is not None:
        objects.append(_scaled_object(agent, agent.spec.scaling))
    if _min_available_replicas(agent) >= 2:
        objects.append(_pdb(agent))
    if agent.spec.network_policy is None or agent.spec.network_policy.enabled:
        objects.append(_network_policy(inputs))
    endpoint = AGENT_URL_TEMPLATE.format(name=agent.metadata.name, namespace=agent.metadata.namespace)
    return RenderedAgent(objects=objects, config_hash=digest, autoscaler=autoscaler, endpoint=endpoint)
