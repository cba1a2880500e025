"""The pure translation of an Agent into Kubernetes objects, locked down by golden files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kagent.api import Agent, Memory, Tool
from kagent.api.manifests import parse_resource
from kagent.api.secrets import secret_env_name
from kagent.api.base import SecretKeySelector
from kagent.controller.render import (
    CONFIG_HASH_ANNOTATION,
    AgentInputs,
    NetworkPolicySettings,
    RenderedAgent,
    render_agent,
)
from tests.golden import assert_golden, dump_yaml_documents
from tests.helpers import seed_documents

GOLDEN = Path(__file__).parent / "golden" / "render"
UID = "11111111-2222-3333-4444-555555555555"


def _seed() -> tuple[Agent, list[Tool], Memory]:
    docs = seed_documents()
    agent = parse_resource(docs[0])
    agent.metadata.uid = UID
    tools = [parse_resource(d) for d in docs[1:3]]
    memory = parse_resource(docs[3])
    return agent, tools, memory  # type: ignore[return-value]


def _agent(spec_patch: dict[str, Any], drop: tuple[str, ...] = ()) -> Agent:
    doc = copy.deepcopy(seed_documents()[0])
    for key in drop:
        doc["spec"].pop(key, None)
    doc["spec"].update(spec_patch)
    agent = parse_resource(doc)
    agent.metadata.uid = UID
    return agent  # type: ignore[return-value]


def _dump(rendered: RenderedAgent) -> str:
    return dump_yaml_documents(rendered.objects)


def _kinds(rendered: RenderedAgent) -> list[str]:
    return [o["kind"] for o in rendered.objects]


def _by_kind(rendered: RenderedAgent, kind: str) -> dict[str, Any]:
    return next(o for o in rendered.objects if o["kind"] == kind)


def test_seed_agent_with_keda_golden() -> None:
    agent, tools, _ = _seed()
    rendered = render_agent(AgentInputs(agent=agent, tools=tools, keda_available=True))
    assert_golden(GOLDEN / "seed-keda.yaml", _dump(rendered))
    assert _kinds(rendered) == [
        "ServiceAccount", "ConfigMap", "Deployment", "Service", "ScaledObject", "PodDisruptionBudget",
        "NetworkPolicy",
    ]
    assert rendered.autoscaler == "keda"
    deployment = _by_kind(rendered, "Deployment")
    assert "replicas" not in deployment["spec"], "replicas must be left to the autoscaler"
    triggers = _by_kind(rendered, "ScaledObject")["spec"]["triggers"]
    assert [t["type"] for t in triggers] == ["cpu", "prometheus"]
    assert triggers[0]["metadata"] == {"value": "70"}


def test_seed_agent_without_keda_installed_has_no_autoscaler() -> None:
    agent, tools, _ = _seed()
    rendered = render_agent(AgentInputs(agent=agent, tools=tools, keda_available=False))
    assert_golden(GOLDEN / "seed-no-keda.yaml", _dump(rendered))
    assert "HorizontalPodAutoscaler" not in _kinds(rendered), "never fall back to an HPA silently"
    assert "ScaledObject" not in _kinds(rendered)
    assert _by_kind(rendered, "Deployment")["spec"]["replicas"] == 2


def test_hpa_from_metrics() -> None:
    agent = _agent({"scaling": {"minReplicas": 1, "maxReplicas": 5, "metrics": [
        {"type": "cpu", "target": {"averageUtilization": 60}},
        {"type": "memory", "target": {"averageUtilization": 80}},
    ]}})
    rendered = render_agent(AgentInputs(agent=agent))
    assert_golden(GOLDEN / "hpa.yaml", _dump(rendered))
    hpa = _by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 5
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert "PodDisruptionBudget" not in _kinds(rendered), "one replica needs no PDB"
    assert "replicas" not in _by_kind(rendered, "Deployment")["spec"]


def test_fixed_replicas_and_pod_overrides() -> None:
    agent = _agent(
        {
            "replicas": 3,
            "observability": {"metrics": {"enabled": False}},
            "pod": {
                "image": "registry.example/kagent:dev",
                "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                "nodeSelector": {"pool": "agents"},
                "tolerations": [{"key": "agents", "operator": "Exists"}],
                "securityContext": {"runAsUser": 1000},
            },
        },
        drop=("scaling", "memory", "tools"),
    )
    rendered = render_agent(AgentInputs(agent=agent))
    assert_golden(GOLDEN / "fixed-replicas-overrides.yaml", _dump(rendered))
    deployment = _by_kind(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/kagent:dev"
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert [p["name"] for p in container["ports"]] == ["http"], "metrics disabled: no metrics port"
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert "PodDisruptionBudget" in _kinds(rendered)


def test_secrets_only_by_reference() -> None:
    agent, tools, memory = _seed()
    agent.spec.memory = None
    agent.spec.memory_ref = None
    rendered = render_agent(AgentInputs(agent=agent, tools=tools, memory=memory))
    container = _by_kind(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
                  if "secretKeyRef" in e.get("valueFrom", {})}
    expected = {("openai-api-key", "api-key"), ("knowledge-db", "password"), ("ticketing-api", "token")}
    assert {(v["name"], v["key"]) for v in secret_env.values()} == expected
    name = secret_env_name(SecretKeySelector(name="openai-api-key", key="api-key"))
    assert secret_env[name] == {"name": "openai-api-key", "key": "api-key"}
    config = _by_kind(rendered, "ConfigMap")["data"]["agent.yaml"]
    runtime_docs = list(yaml.safe_load_all(config))
    assert [d["kind"] for d in runtime_docs] == ["Agent", "Tool", "Tool", "Memory"]
    assert all("status" not in d for d in runtime_docs)


def test_restricted_security_and_probes() -> None:
    agent, tools, _ = _seed()
    rendered = render_agent(AgentInputs(agent=agent, tools=tools))
    deployment = _by_kind(rendered, "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for obj in rendered.objects:
        owner = obj["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Agent" and owner["uid"] == UID and owner["controller"] is True


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        (lambda a, t, s: a.spec.__setattr__("system_prompt", "Be terse."), True),
        (lambda a, t, s: t[1].spec.__setattr__("description", "Open a ticket"), True),
        (lambda a, t, s: s.append("rotated"), True),
        (lambda a, t, s: a.metadata.__setattr__("labels", {"team": "x"}), False),
        (lambda a, t, s: a.spec.scaling.__setattr__("max_replicas", 20), False),
        (lambda a, t, s: a.spec.scaling.__setattr__("min_replicas", 3), False),
    ],
    ids=["prompt", "tool", "secret", "unrelated-label", "max-replicas", "min-replicas"],
)
def test_config_hash_follows_what_the_pods_run(change: Any, rolls: bool) -> None:
    agent, tools, _ = _seed()
    before = render_agent(AgentInputs(agent=agent, tools=tools, secret_digest="v1"))
    secrets = ["v1"]
    agent2, tools2, _ = _seed()
    change(agent2, tools2, secrets)
    after = render_agent(AgentInputs(agent=agent2, tools=tools2, secret_digest="".join(secrets)))
    hash_of = lambda r: _by_kind(r, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        CONFIG_HASH_ANNOTATION
    ]
    assert (hash_of(before) != hash_of(after)) is rolls


def test_rendering_is_deterministic() -> None:
    agent, tools, _ = _seed()
    first = _dump(render_agent(AgentInputs(agent=agent, tools=tools)))
    agent2, tools2, _ = _seed()
    assert _dump(render_agent(AgentInputs(agent=agent2, tools=tools2))) == first


def _template_hash(rendered: RenderedAgent) -> str:
    return _by_kind(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]


def test_replicas_change_only_the_replica_count() -> None:
    """spec.replicas (what ``kubectl scale agent`` writes) must not restart a pod: the pod
    template, its config hash and the runtime config stay the same."""
    one, three = (_agent({"replicas": n}, drop=("scaling",)) for n in (1, 3))
    before, after = render_agent(AgentInputs(agent=one)), render_agent(AgentInputs(agent=three))
    assert _by_kind(after, "Deployment")["spec"]["replicas"] == 3
    assert _template_hash(before) == _template_hash(after)
    assert _by_kind(before, "Deployment")["spec"]["template"] == _by_kind(after, "Deployment")["spec"]["template"]
    assert _by_kind(before, "ConfigMap") == _by_kind(after, "ConfigMap")
    assert "replicas" not in _by_kind(after, "ConfigMap")["data"]["agent.yaml"]


def _ingress(rendered: RenderedAgent) -> list[dict[str, Any]]:
    return _by_kind(rendered, "NetworkPolicy")["spec"]["ingress"]


def test_network_policy_admits_the_namespace_the_controller_and_allowed_peers() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"team": "observability"}}}
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    settings = NetworkPolicySettings(controller_namespace="ops", controller_pod_labels={"app": "kagent"},
                                     allow_from=(gateway,), metrics_from=(monitoring,))
    agent = _agent({"networkPolicy": {"allowFrom": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}})
    rendered = render_agent(AgentInputs(agent=agent, network=settings))
    policy = _by_kind(rendered, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"kagent.dev/agent": "customer-support-agent"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving, metrics = _ingress(rendered)
    assert serving["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert serving["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
         "podSelector": {"matchLabels": {"app": "kagent"}}},
        gateway,
        {"podSelector": {"matchLabels": {"role": "frontend"}}},
    ]
    controller = serving["from"][1]  # the controller scrapes it too, for rollout analysis
    assert metrics == {"ports": [{"protocol": "TCP", "port": 9090}], "from": [controller, monitoring]}


def test_network_policy_without_metrics_or_turned_off() -> None:
    quiet = _agent({"observability": {"metrics": {"enabled": False}}})
    assert len(_ingress(render_agent(AgentInputs(agent=quiet)))) == 1, "no metrics port, no metrics rule"
    off = _agent({"networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" not in _kinds(render_agent(AgentInputs(agent=off)))
