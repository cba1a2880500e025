"""The controller against a real control plane: an Agent becomes a running, scaled workload,
rolls when what it runs changes, reports references that do not resolve, and never fights an
autoscaler."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml

from kagent.controller.render import CONFIG_HASH_ANNOTATION
from kagent.local.binaries import keda_crd_files
from tests.helpers import create_seed_secrets, seed_documents, wait_for

pytestmark = pytest.mark.integration

def get(cp: Any, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


def apply(cp: Any, docs: list[dict[str, Any]], namespace: str) -> Any:
    docs = copy.deepcopy(docs)
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


create_secrets = create_seed_secrets


def config_hash(cp: Any, name: str, namespace: str) -> str | None:
    deployment = get(cp, "deployment", name, namespace)
    if deployment is None:
        return None
    return deployment["spec"]["template"]["metadata"]["annotations"].get(CONFIG_HASH_ANNOTATION)


def ready(cp: Any, name: str, namespace: str) -> bool:
    agent = get(cp, "agent", name, namespace)
    return bool(agent) and condition(agent, "Ready").get("status") == "True" and (
        agent["status"].get("observedGeneration") == agent["metadata"]["generation"]
    )


def test_seed_agent_without_then_with_keda(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_secrets(cp, namespace)
    apply(cp, seed_documents()[:4], namespace)
    name = "customer-support-agent"
    wait_for(lambda: ready(cp, name, namespace), what="the seed agent to be Ready")
    agent = get(cp, "agent", name, namespace)
    assert condition(agent, "Accepted")["status"] == "True"
    autoscaling = condition(agent, "Autoscaling")
    assert autoscaling["status"] == "False" and "KEDA" in autoscaling["message"]
    for kind in ("serviceaccount", "configmap", "deployment", "service", "poddisruptionbudget"):
        child = get(cp, kind, name, namespace)
        assert child is not None, f"{kind} missing"
        assert child["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]
    assert get(cp, "hpa", name, namespace) is None, "no HPA when the Agent asked for KEDA"
    deployment = get(cp, "deployment", name, namespace)
    assert deployment["spec"]["replicas"] == 2
    assert agent["status"]["readyReplicas"] == 2
    assert agent["status"]["endpoint"] == f"http://{name}.{namespace}.svc.cluster.local"
    config = get(cp, "configmap", name, namespace)["data"]["agent.yaml"]
    assert "s3cr3t" not in config, "secret values never reach a ConfigMap"
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector",
                        f"involvedObject.name={name}", "-o", "json").stdout
    assert "KEDANotInstalled" in events

    # Install KEDA's real CRDs: the controller notices and hands replicas to a ScaledObject.
    for crd in keda_crd_files():
        cp.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        scaled = wait_for(lambda: get(cp, "scaledobject", name, namespace), what="a ScaledObject")
        assert [t["type"] for t in scaled["spec"]["triggers"]] == ["cpu", "prometheus"]
        assert scaled["spec"]["minReplicaCount"] == 2 and scaled["spec"]["maxReplicaCount"] == 10
        wait_for(lambda: condition(get(cp, "agent", name, namespace), "Autoscaling").get("status") == "True",
                 what="Autoscaling=True")
        assert get(cp, "hpa", name, namespace) is None, "never an HPA beside a ScaledObject"
        managed = json.loads(cp.kubectl("get", "deployment", name, "-n", namespace, "-o", "json",
                                        "--show-managed-fields").stdout)["metadata"]["managedFields"]
        ours = [m for m in managed if m["manager"] == "kagent" and m["operation"] == "Apply"]
        assert ours and "f:replicas" not in json.dumps(ours[0]["fieldsV1"]["f:spec"]), (
            "with an autoscaler the controller must not own replicas"
        )
    finally:
        for crd in keda_crd_files():
            cp.kubectl("delete", "-f", str(crd), "--ignore-not-found", "--wait=false", check=False)


def test_changes_roll_the_pods_and_unrelated_secrets_do_not(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_secrets(cp, namespace)
    docs = seed_documents()[:3]
    agent_doc = docs[0]
    agent_doc["spec"].pop("scaling")
    agent_doc["spec"]["replicas"] = 1
    apply(cp, docs, namespace)
    name = agent_doc["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="Ready")
    hashes = [config_hash(cp, name, namespace)]

    def rolled() -> bool:
        current = config_hash(cp, name, namespace)
        return current not in hashes and ready(cp, name, namespace)

    # 1. the system prompt
    agent_doc["spec"]["systemPrompt"] = "You answer in one sentence."
    apply(cp, [agent_doc], namespace)
    wait_for(rolled, what="a rollout after the prompt changed")
    hashes.append(config_hash(cp, name, namespace))
    # 2. a Tool the agent uses
    tool = docs[2]
    tool["spec"]["description"] = "Open a ticket in the helpdesk"
    apply(cp, [tool], namespace)
    wait_for(rolled, what="a rollout after the Tool changed")
    hashes.append(config_hash(cp, name, namespace))
    # 3. rotating a referenced Secret
    # (one Secret: rotating the three one after another would roll three times)
    rotated = cp.kubectl("create", "secret", "generic", "openai-api-key", "-n", namespace,
                         "--from-literal=api-key=rotated", "--dry-run=client", "-o", "yaml").stdout
    cp.kubectl("apply", "-f", "-", input=rotated)
    wait_for(rolled, what="a rollout after the Secret rotated")
    hashes.append(config_hash(cp, name, namespace))
    # 4. an unrelated Secret: nothing rolls
    cp.kubectl("create", "secret", "generic", "unrelated", "-n", namespace, "--from-literal=k=v")
    generation = get(cp, "deployment", name, namespace)["metadata"]["generation"]
    time.sleep(3)
    assert config_hash(cp, name, namespace) == hashes[-1]
    assert get(cp, "deployment", name, namespace)["metadata"]["generation"] == generation


def test_missing_tool_is_reported_and_recovery_is_automatic(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_secrets(cp, namespace)
    docs = seed_documents()[:3]
    docs[0]["spec"].pop("scaling")
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="Ready")
    cp.kubectl("delete", "tool", "create-ticket", "-n", namespace)
    accepted = wait_for(
        lambda: (c := condition(get(cp, "agent", name, namespace), "Accepted")).get("status") == "False" and c,
        what="Accepted=False",
    )
    assert accepted["reason"] == "ToolNotFound"
    assert 'Tool "create-ticket"' in accepted["message"]
    assert get(cp, "deployment", name, namespace) is not None, "a missing reference must not take the agent down"
    apply(cp, [docs[2]], namespace)
    wait_for(lambda: condition(get(cp, "agent", name, namespace), "Accepted").get("status") == "True",
             what="Accepted=True again")


def test_an_autoscaler_is_never_fought(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    create_secrets(cp, namespace)
    docs = seed_documents()[:3]
    docs[0]["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 5,
                                  "metrics": [{"type": "cpu", "target": {"averageUtilization": 70}}]}
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: get(cp, "hpa", name, namespace), what="an HPA")
    wait_for(lambda: ready(cp, name, namespace), what="Ready")
    # What the HPA does when load rises: scale the Deployment.
    cp.kubectl("scale", "deployment", name, "-n", namespace, "--replicas=4")
    before = config_hash(cp, name, namespace)
    docs[0]["spec"]["systemPrompt"] = "Changed, so the controller re-applies the Deployment."
    apply(cp, [docs[0]], namespace)
    wait_for(lambda: config_hash(cp, name, namespace) != before and ready(cp, name, namespace),
             timeout=90, what="the rollout")
    assert get(cp, "deployment", name, namespace)["spec"]["replicas"] == 4
    wait_for(lambda: get(cp, "agent", name, namespace)["status"].get("readyReplicas") == 4,
             what="status to report 4 ready replicas")
    # Removing scaling prunes the HPA and the controller takes the replicas back.
    docs[0]["spec"].pop("scaling")
    docs[0]["spec"]["replicas"] = 2
    apply(cp, [docs[0]], namespace)
    wait_for(lambda: get(cp, "hpa", name, namespace) is None, what="the HPA to be pruned")
    wait_for(lambda: get(cp, "deployment", name, namespace)["spec"]["replicas"] == 2, what="replicas 2")


def test_webhook_refuses_bad_workflows_naming_the_field(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    cases = [
        ([{"name": "a", "agent": "x", "dependsOn": ["b"]}, {"name": "b", "agent": "x", "dependsOn": ["a"]}],
         "spec.steps[0].dependsOn: dependency cycle: a -> b -> a"),
        ([{"name": "a", "agent": "x", "dependsOn": ["nope"]}], "spec.steps[0].dependsOn[0]: no step named 'nope'"),
        ([{"name": "a", "agent": "x", "when": "input.size >"}], "spec.steps[0].when: invalid CEL expression"),
        ([{"name": "a", "agent": "x", "input": "{{ input.topic "}], "spec.steps[0].input: invalid template"),
    ]
    for steps, expected in cases:
        doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "bad", "namespace": namespace}, "spec": {"steps": steps}}
        result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
        assert result.returncode != 0
        assert "admission webhook" in result.stderr and expected in result.stderr, result.stderr
        assert get(cp, "workflow", "bad", namespace) is None
    # A reference to an Agent that does not exist yet is a warning, not a refusal.
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
           "metadata": {"name": "later", "namespace": namespace},
           "spec": {"steps": [{"name": "a", "agent": "not-yet", "input": "hello"}]}}
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert 'spec.steps[0].agent: Agent "not-yet" does not exist yet' in result.stderr
    # The mutating webhook labels runs with their workflow.
    run = {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
           "metadata": {"name": "r", "namespace": namespace}, "spec": {"workflowRef": {"name": "later"}}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(run))
    assert get(cp, "workflowrun", "r", namespace)["metadata"]["labels"]["kagent.dev/workflow"] == "later"
    run["spec"]["input"] = {"x": 1}
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(run), check=False)
    assert result.returncode != 0 and "spec.input: is immutable" in result.stderr
    metrics = kagent_controller.metrics()
    assert 'kagent_webhook_refusals_total{kind="Workflow"}' in metrics
    assert 'kagent_controller_reconcile_total{kind="Agent",result="success"}' in metrics
