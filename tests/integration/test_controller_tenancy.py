"""The controller in a shared cluster, through real kubectl against the real control plane:
scaling an Agent (kubectl scale, an HPA targeting the Agent) changes only its replica count; it
never takes over an object it does not control; every agent gets its NetworkPolicy."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from tests.helpers import create_seed_secrets, seed_documents, wait_for
from tests.integration.test_controller_agents import apply, condition, config_hash, get, ready

pytestmark = pytest.mark.integration


def fixed_agent(name: str | None = None, replicas: int = 1) -> list[dict[str, Any]]:
    """The seed Agent (redis memory) and its Tools, with a fixed replica count."""
    docs = copy.deepcopy(seed_documents()[:3])
    docs[0]["spec"].pop("scaling")
    docs[0]["spec"]["replicas"] = replicas
    if name is not None:
        docs[0]["metadata"]["name"] = name
    return docs


def pods(cp: Any, name: str, namespace: str) -> dict[str, str]:
    """The agent's pods that are not terminating: name → uid."""
    listed = json.loads(cp.kubectl("get", "pods", "-n", namespace, "-l", f"kagent.dev/agent={name}",
                                   "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in listed
            if not p["metadata"].get("deletionTimestamp")}


def scale_of(cp: Any, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(cp.kubectl("get", "--raw",
                                 f"/apis/kagent.dev/v1alpha1/namespaces/{namespace}/agents/{name}/scale").stdout)


def test_kubectl_scale_changes_only_the_replica_count(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    docs = fixed_agent()
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="Ready with one pod")
    first_pods = pods(cp, name, namespace)
    assert len(first_pods) == 1
    hash_before = config_hash(cp, name, namespace)
    replicasets_before = cp.kubectl("get", "replicasets", "-n", namespace, "-l", f"kagent.dev/agent={name}",
                                    "-o", "name").stdout.split()

    result = cp.kubectl("scale", "agent", name, "-n", namespace, "--replicas=3")
    assert "scaled" in result.stdout
    wait_for(lambda: get(cp, "deployment", name, namespace)["spec"]["replicas"] == 3, what="3 replicas")
    wait_for(lambda: ready(cp, name, namespace)
             and get(cp, "agent", name, namespace)["status"].get("readyReplicas") == 3,
             what="Ready with 3 pods")
    assert config_hash(cp, name, namespace) == hash_before, "scaling must not change the pod template"
    now = pods(cp, name, namespace)
    assert len(now) == 3 and all(now.get(p) == uid for p, uid in first_pods.items()), (
        "the pod that ran before scaling keeps running (no restart)")
    assert cp.kubectl("get", "replicasets", "-n", namespace, "-l", f"kagent.dev/agent={name}",
                      "-o", "name").stdout.split() == replicasets_before, "no new rollout"
    scale = scale_of(cp, name, namespace)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == f"kagent.dev/agent={name}"

    # An HPA targeting the Agent scales it through the same subresource: below its minReplicas
    # it scales up without needing any metric.
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": f"{name}-by-user", "namespace": namespace},
           "spec": {"scaleTargetRef": {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "name": name},
                    "minReplicas": 4, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 80}}}]}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(hpa))
    wait_for(lambda: get(cp, "agent", name, namespace)["spec"].get("replicas") == 4, timeout=90,
             what="the HPA to scale the Agent to 4")
    wait_for(lambda: get(cp, "deployment", name, namespace)["spec"]["replicas"] == 4, what="4 replicas")
    assert config_hash(cp, name, namespace) == hash_before
    assert all(p in pods(cp, name, namespace) for p in first_pods)


def test_an_agent_with_autoscaling_cannot_be_scaled_by_hand(kagent_controller: Any, namespace: str) -> None:
    """With spec.scaling the Agent's autoscaler owns the Deployment's replicas; kubectl scale on
    the Agent is refused rather than fought over."""
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    docs = copy.deepcopy(seed_documents()[:3])
    docs[0]["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 3,
                                  "metrics": [{"type": "cpu", "target": {"averageUtilization": 70}}]}
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: get(cp, "hpa", name, namespace), what="the Agent's HPA")
    refused = cp.kubectl("scale", "agent", name, "-n", namespace, "--replicas=2", check=False)
    assert refused.returncode != 0 and "give either replicas or scaling, not both" in refused.stderr


def test_in_memory_memory_with_several_pods_is_warned_at_admission(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    docs = fixed_agent(replicas=2)
    docs[0]["spec"]["memory"] = {"type": "in-memory"}
    result = apply(cp, docs[:1], namespace)
    assert "Warning: spec.replicas: 2 pods with spec.memory.type in-memory" in result.stderr
    docs[0]["spec"]["replicas"] = 1
    assert "in-memory" not in apply(cp, docs[:1], namespace).stderr


def test_an_object_it_does_not_control_is_never_taken_over(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    name = "writer"
    theirs = {"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": name, "namespace": namespace, "labels": {"team": "web"}},
              "spec": {"selector": {"app": "website"}, "ports": [{"name": "web", "port": 8000}]}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(theirs))
    original = get(cp, "service", name, namespace)
    docs = fixed_agent(name)
    apply(cp, docs, namespace)

    def conflict() -> dict[str, Any]:
        found = condition(get(cp, "agent", name, namespace), "Ready")
        return found if found.get("reason") == "ServiceConflict" else {}

    ready_condition = wait_for(conflict, what="Ready=False naming the Service")
    assert ready_condition["status"] == "False"
    assert f'Service "{name}" in namespace "{namespace}" already exists and is not controlled by this Agent' \
        in ready_condition["message"]
    service = get(cp, "service", name, namespace)
    assert service["metadata"]["resourceVersion"] == original["metadata"]["resourceVersion"], "untouched"
    assert "ownerReferences" not in service["metadata"]
    assert service["spec"]["selector"] == {"app": "website"}
    for kind in ("deployment", "configmap", "serviceaccount", "networkpolicy"):
        assert get(cp, kind, name, namespace) is None, f"no half-made agent: a {kind} was created"
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector",
                        f"involvedObject.name={name},involvedObject.kind=Agent", "-o", "json").stdout
    assert "ServiceConflict" in events

    cp.kubectl("delete", "agent", name, "-n", namespace, "--wait=true")
    cp.kubectl("wait", "--for=delete", f"agent/{name}", "-n", namespace, "--timeout=30s", check=False)
    assert get(cp, "service", name, namespace)["metadata"]["uid"] == original["metadata"]["uid"], (
        "deleting the Agent leaves the other Service in place")

    # Once the name is free the agent comes up, with a Service of its own.
    cp.kubectl("delete", "service", name, "-n", namespace)
    apply(cp, docs, namespace)
    wait_for(lambda: ready(cp, name, namespace), what="Ready once the name is free")
    agent = get(cp, "agent", name, namespace)
    ours = get(cp, "service", name, namespace)
    assert ours["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]


def test_a_conflict_clears_when_the_other_object_goes(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    name = "reader"
    cp.kubectl("create", "configmap", name, "-n", namespace, "--from-literal=owner=someone-else")
    docs = fixed_agent(name)
    apply(cp, docs, namespace)
    wait_for(lambda: condition(get(cp, "agent", name, namespace), "Ready").get("reason") == "ConfigMapConflict",
             what="Ready=False ConfigMapConflict")
    assert get(cp, "configmap", name, namespace)["data"] == {"owner": "someone-else"}
    cp.kubectl("delete", "configmap", name, "-n", namespace)
    wait_for(lambda: ready(cp, name, namespace), timeout=90, what="Ready after the ConfigMap went")


def test_every_agent_gets_its_network_policy(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    docs = fixed_agent()
    docs[0]["spec"]["networkPolicy"] = {"allowFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
         "podSelector": {"matchLabels": {"app": "gateway"}}}]}
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="Ready")
    policy = get(cp, "networkpolicy", name, namespace)
    agent = get(cp, "agent", name, namespace)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"kagent.dev/agent": name}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving, metrics = policy["spec"]["ingress"]
    assert serving["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert {"podSelector": {}} in serving["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kagent-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "controller",
                                            "app.kubernetes.io/name": "kagent"}}} in serving["from"]
    assert serving["from"][-1]["podSelector"] == {"matchLabels": {"app": "gateway"}}
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9090}]
    controller = serving["from"][1]  # it reads the metrics too (rollout analysis)
    assert metrics["from"] == [controller,
                               {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]

    # Opened up by hand: put back.
    cp.kubectl("patch", "networkpolicy", name, "-n", namespace, "--type=merge",
               "-p", '{"spec": {"ingress": [{}]}}')
    wait_for(lambda: len(get(cp, "networkpolicy", name, namespace)["spec"]["ingress"]) == 2
             and get(cp, "networkpolicy", name, namespace)["spec"]["ingress"][0].get("from"),
             what="the NetworkPolicy put back")
    # Turned off in the Agent: removed.
    docs[0]["spec"]["networkPolicy"] = {"enabled": False}
    apply(cp, docs[:1], namespace)
    wait_for(lambda: get(cp, "networkpolicy", name, namespace) is None, what="the NetworkPolicy pruned")
