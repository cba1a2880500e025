"""Agent: one declarative resource for an AI agent — model, prompt, tools, memory, scaling,
resources and observability. The controller turns it into a running, scaled workload."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from kagent.api.base import (
    AGE_COLUMN,
    READY_COLUMN,
    Condition,
    ConfigMapKeySelector,
    Duration,
    FreeForm,
    IntOrString,
    KagentModel,
    LocalObjectReference,
    ObjectName,
    PrinterColumn,
    Resource,
    SecretKeySelector,
    cel,
)
from kagent.api.memory import MemorySpec
from kagent.api.model import ModelSpec
from kagent.api.podsecurity import reserved_label_problems, security_context_problems
from kagent.api.rollout import RolloutSpec, RolloutStatus


class ToolReference(KagentModel):
    """A tool the agent may use: a Tool resource, or another Agent used as a tool."""

    name: ObjectName
    """Name of the Tool (or, with kind Agent, of the Agent) in the same namespace."""
    kind: Literal["Tool", "Agent"] = "Tool"
    """Tool for a Tool resource; Agent to call another Agent over A2A as a tool."""


class MetricTarget(KagentModel):
    """The value the autoscaler keeps the metric at."""

    average_utilization: Annotated[int, Field(ge=1, le=1000)]
    """Target average utilisation, in percent of the pods' requests."""


class ScalingMetric(KagentModel):
    """A resource metric the autoscaler follows."""

    type: Literal["cpu", "memory"]
    """cpu or memory."""
    target: MetricTarget
    """Target value."""


class KedaTrigger(KagentModel):
    """A KEDA trigger, passed to the ScaledObject as written."""

    type: Annotated[str, Field(min_length=1, max_length=128)]
    """KEDA scaler type, e.g. prometheus, cron, redis."""
    metadata: dict[str, str]
    """Scaler settings (for prometheus: serverAddress, query or metricName, threshold)."""
    authentication_ref: LocalObjectReference | None = None
    """A KEDA TriggerAuthentication in the same namespace."""


class KedaSpec(KagentModel):
    """Scale with KEDA instead of a HorizontalPodAutoscaler."""

    enabled: bool = False
    """Use a KEDA ScaledObject (the KEDA CRDs must be installed)."""
    triggers: Annotated[list[KedaTrigger], Field(max_length=32)] | None = None
    """Extra triggers, beside the cpu/memory metrics which become KEDA triggers too. Only with
    enabled: true (refused otherwise); a prometheus trigger needs a threshold and a query or a
    metricName."""
    polling_interval: Annotated[int, Field(ge=1)] | None = None
    """Seconds between trigger checks (KEDA's default is 30)."""
    cooldown_period: Annotated[int, Field(ge=0)] | None = None
    """Seconds to wait after the last active trigger before scaling to minReplicas 0."""


class ScalingSpec(KagentModel):
    """Autoscaling: an autoscaling/v2 HPA from metrics, or a KEDA ScaledObject."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not be greater than maxReplicas",
                    ".minReplicas",
                ),
                cel(
                    "self.minReplicas > 0 || (has(self.keda) && self.keda.enabled)",
                    "minReplicas 0 (scale to zero) needs keda.enabled",
                    ".minReplicas",
                ),
                cel(
                    "(has(self.metrics) && size(self.metrics) > 0) || (has(self.keda) && "
                    "self.keda.enabled && has(self.keda.triggers) && size(self.keda.triggers) > 0)",
                    "give at least one metric, or enable keda with at least one trigger",
                    ".metrics",
                ),
            ]
        }
    }

    min_replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    """Fewest pods."""
    max_replicas: Annotated[int, Field(ge=1, le=10_000)]
    """Most pods."""
    metrics: Annotated[
        list[ScalingMetric],
        Field(
            max_length=2,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] | None = None
    """Resource metrics to scale on (cpu, memory)."""
    keda: KedaSpec | None = None
    """Scale with KEDA triggers such as the agent_active_sessions metric."""


class ResourceRequirements(KagentModel):
    """Compute resources of the agent container, as in a Pod spec."""

    requests: dict[str, IntOrString] | None = None
    """Resources reserved, e.g. cpu: 250m, memory: 512Mi."""
    limits: dict[str, IntOrString] | None = None
    """Resource ceilings, e.g. cpu: 500m, memory: 1Gi."""


TracingProvider = Literal["langfuse", "langsmith", "cloudwatch", "otlp"]


class TracingSpec(KagentModel):
    """OpenTelemetry traces of requests, model calls and tool calls."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!self.enabled || self.provider in ['langfuse', 'langsmith'] || "
                    "(has(self.endpoint) && self.endpoint != '')",
                    "endpoint is required for tracing providers otlp and cloudwatch "
                    "(the OTLP collector URL)",
                    ".endpoint",
                )
            ]
        }
    }

    enabled: bool = False
    """Send traces."""
    provider: TracingProvider = "otlp"
    """Where to: langfuse, langsmith, cloudwatch (through an OTLP collector) or otlp."""
    endpoint: Annotated[str, Field(max_length=2048)] | None = None
    """OTLP/HTTP endpoint. Defaults to Langfuse Cloud or LangSmith for those providers."""
    secret_ref: LocalObjectReference | None = None
    """Secret with the provider's keys (langfuse: public-key and secret-key; langsmith:
    api-key)."""
    sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """Fraction of requests traced."""


class MetricsSpec(KagentModel):
    """Prometheus metrics of the agent."""

    enabled: bool = True
    """Serve /metrics."""
    port: Annotated[int, Field(ge=1024, le=65535)] = 9090
    """Port of the metrics endpoint."""


class ObservabilitySpec(KagentModel):
    """Traces and metrics."""

    tracing: TracingSpec | None = None
    """OpenTelemetry tracing."""
    metrics: MetricsSpec | None = None
    """Prometheus metrics."""


class RequestLimits(KagentModel):
    """Per-request budgets that stop a runaway request with a clear message."""

    max_turns: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Most model calls in one request."""
    max_tool_calls: Annotated[int, Field(ge=0, le=10_000)] | None = None
    """Most tool calls in one request."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Most tokens (in + out) in one request."""
    timeout: Duration | None = None
    """Longest time one request may take."""


class EnvVarSource(KagentModel):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: ConfigMapKeySelector | None = None
    """A key of a ConfigMap."""


class EnvVar(KagentModel):
    """An environment variable of the agent container."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Variable name."""
    value: str | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Value from a Secret or ConfigMap."""


class PodOverrides(KagentModel):
    """Changes to the agent pods beyond what the Agent spec says."""

    image: Annotated[str, Field(max_length=1024)] | None = None
    """Container image; defaults to the controller's own image."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Image pull policy."""
    env: Annotated[
        list[EnvVar],
        Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    ] | None = None
    """Extra environment variables."""
    labels: dict[str, str] | None = None
    """Extra pod labels. Labels Kagent selects pods by (``kagent.dev/*``,
    ``app.kubernetes.io/name``, ``instance`` and ``managed-by``) are refused."""
    annotations: dict[str, str] | None = None
    """Extra pod annotations."""
    node_selector: dict[str, str] | None = None
    """Node labels the pods must run on."""
    tolerations: list[FreeForm] | None = None
    """Pod tolerations, as in a Pod spec."""
    affinity: FreeForm | None = None
    """Pod affinity, as in a Pod spec."""
    security_context: FreeForm | None = None
    """Container security context fields that replace Kagent's restricted defaults. They may
    only tighten them: no privileged, no privilege escalation, no added capabilities (drop must
    keep ALL), no root, a writable root file system or an unconfined seccomp/AppArmor profile."""
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    """Priority class of the pods."""

    @field_validator("labels")
    @classmethod
    def _no_selector_labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        problems = reserved_label_problems(labels or {})
        if problems:
            raise ValueError("; ".join(problems))
        return labels

    @field_validator("security_context")
    @classmethod
    def _only_tightens(cls, context: dict[str, object] | None) -> dict[str, object] | None:
        problems = security_context_problems(context or {})
        if problems:
            raise ValueError("may only tighten the restricted defaults: " + "; ".join(problems))
        return context


class LabelSelector(KagentModel):
    """A label selector, as in Kubernetes (both parts must match)."""

    match_labels: dict[str, str] | None = None
    """Labels that must all be present with these values."""
    match_expressions: Annotated[list[FreeForm], Field(max_length=32)] | None = None
    """Set-based requirements ({key, operator: In | NotIn | Exists | DoesNotExist, values})."""


class NetworkPeer(KagentModel):
    """Pods allowed to call the agent, as a NetworkPolicy peer: pods matching ``podSelector`` in
    namespaces matching ``namespaceSelector`` (either alone: every pod of those namespaces, or
    those pods in the agent's namespace)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("has(self.namespaceSelector) || has(self.podSelector)",
                    "give namespaceSelector, podSelector or both", ".podSelector"),
            ]
        }
    }

    namespace_selector: LabelSelector | None = None
    """Namespaces whose pods may call the agent (with podSelector: only those pods)."""
    pod_selector: LabelSelector | None = None
    """Pods that may call the agent (in the agent's namespace unless namespaceSelector is given)."""


class NetworkPolicySpec(KagentModel):
    """The agent's NetworkPolicy: who may reach its serving port."""

    enabled: bool = True
    """Give the agent a NetworkPolicy (its serving port reachable only from its own namespace,
    the Kagent controller and ``allowFrom``; its metrics port from the monitoring namespaces the
    chart names). Turning it off leaves the pods open to every pod the cluster network lets in."""
    allow_from: Annotated[list[NetworkPeer], Field(max_length=32)] | None = None
    """More callers, beside the agent's namespace and the Kagent controller."""


class ApiKey(KagentModel):
    """An API key an external application may present instead of a Kubernetes token."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    """Name of the key: the caller's identity is ``apikey:<name>`` (tasks and conversations are
    kept per caller)."""
    secret_key_ref: SecretKeySelector
    """The Secret key holding the API key (at least 16 characters). Rotate by adding a second
    entry with the new key, moving clients over, then removing the old entry."""


AuthMode = Literal["required", "none"]


class AgentAuth(KagentModel):
    """Who may call the agent's A2A and OpenAI-compatible endpoints."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.mode == 'required' || !has(self.apiKeys) || size(self.apiKeys) == 0",
                    "apiKeys need mode required (mode none lets anyone in without a key)",
                    ".apiKeys",
                ),
            ]
        }
    }

    mode: AuthMode = "required"
    """required (default): every request carries a Kubernetes bearer token (checked with
    TokenReview, allowed by RBAC verb ``invoke`` on ``agents.kagent.dev``, checked with
    SubjectAccessReview) or one of the apiKeys. none: anyone who can reach the agent may call
    it; warned at admission and shown by ``kagent get agents``."""
    api_keys: Annotated[
        list[ApiKey],
        Field(
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] | None = None
    """API keys accepted besides Kubernetes tokens, for applications outside the cluster."""


class AgentSpec(KagentModel):
    """Desired state of an Agent."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.memory) && has(self.memoryRef))",
                    "give either memory or memoryRef, not both",
                    ".memoryRef",
                ),
                cel(
                    "!(has(self.replicas) && has(self.scaling))",
                    "give either replicas or scaling, not both (an Agent with scaling is scaled by "
                    "its scaling.minReplicas and maxReplicas, not by kubectl scale)",
                    ".replicas",
                ),
            ]
        }
    }

    display_name: Annotated[str, Field(max_length=256)] | None = None
    """Human-friendly name, shown in the agent card."""
    description: Annotated[str, Field(max_length=4096)] | None = None
    """What the agent does; shown in the agent card and to agents that call it."""
    model: ModelSpec
    """The language model."""
    system_prompt: Annotated[str, Field(max_length=262_144)] | None = None
    """Instructions the model receives before every conversation."""
    tools: Annotated[
        list[ToolReference],
        Field(
            max_length=128,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] | None = None
    """Tools the agent may use."""
    memory: MemorySpec | None = None
    """Memory, inline."""
    memory_ref: LocalObjectReference | None = None
    """Memory, from a Memory resource in the same namespace."""
    replicas: Annotated[int, Field(ge=0, le=10_000)] | None = None
    """Number of pods, when there is no scaling (default 1). Changing it changes only the
    Deployment's replica count — no pod restarts. It is the Agent's scale subresource too:
    ``kubectl scale agent NAME --replicas=N`` and an autoscaler targeting the Agent set it."""
    scaling: ScalingSpec | None = None
    """Autoscaling."""
    resources: ResourceRequirements | None = None
    """Compute resources of each pod."""
    observability: ObservabilitySpec | None = None
    """Traces and metrics."""
    rollout: RolloutSpec | None = None
    """How changes replace the pods."""
    limits: RequestLimits | None = None
    """Per-request budgets."""
    pod: PodOverrides | None = None
    """Pod-level overrides: image, env, scheduling, security context."""
    network_policy: NetworkPolicySpec | None = None
    """Who may reach the agent's pods over the network (by default its namespace and the
    Kagent controller)."""
    auth: AgentAuth | None = None
    """Who may call the agent (default: authenticated, RBAC-authorised callers only)."""


class AgentStatus(KagentModel):
    """Observed state of an Agent."""

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """Accepted: every referenced Tool, Memory and Secret resolves. Ready: the current
    generation is rolled out and available."""
    replicas: int | None = None
    """Pods that exist (the scale subresource's current replicas)."""
    ready_replicas: int | None = None
    """Pods that are ready."""
    endpoint: str | None = None
    """In-cluster URL of the agent's Service (A2A and OpenAI-compatible API)."""
    config_hash: str | None = None
    """Hash of the rendered configuration the pods run with."""
    selector: str | None = None
    """Label selector of the agent's pods (for the scale subresource)."""
    rollout: RolloutStatus | None = None
    """Canary and blue-green: where the rollout is, the last analysis and decision."""


class Agent(Resource):
    """An AI agent: the model, prompt, tools and memory it uses, and how it runs."""

    kind_name: ClassVar[str] = "Agent"
    plural: ClassVar[str] = "agents"
    short_names: ClassVar[tuple[str, ...]] = ("ag",)
    scale_subresource: ClassVar[dict[str, str] | None] = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Provider", json_path=".spec.model.provider"),
        PrinterColumn(name="Model", json_path=".spec.model.name"),
        READY_COLUMN,
        PrinterColumn(name="Replicas", json_path=".status.readyReplicas", type="integer",
                      description="Ready pods"),
        PrinterColumn(name="Endpoint", json_path=".status.endpoint", priority=1),
        PrinterColumn(name="Auth", json_path=".spec.auth.mode", priority=1,
                      description="none: the agent answers unauthenticated callers"),
        AGE_COLUMN,
    )

    root_validations: ClassVar[tuple[dict[str, str], ...]] = (
        cel(
            "size(self.metadata.name) <= 63 && "
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name of an Agent must be a DNS label of at most 63 characters starting "
            "with a letter, because it names the agent's Service",
        ),
    )

    kind: Literal["Agent"] = "Agent"
    """Always Agent."""
    spec: AgentSpec
    """Desired agent."""
    status: AgentStatus | None = None
    """Observed state, written by the controller."""
