"""The generated CRDs on a real kube-apiserver: the seed applies unchanged, bad objects are
refused with the field named, and kubectl's explain, columns and categories work."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kagent.api.crd import default_crd_dir
from tests.helpers import seed_documents

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crds_installed(control_plane: Any) -> Any:
    control_plane.kubectl("apply", "--server-side", "-f", str(default_crd_dir()))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *[f"crd/{p}.kagent.dev" for p in ("agents", "tools", "memories", "workflows", "workflowruns")],
    )
    return control_plane


def _in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    return doc


def _apply(cp: Any, docs: list[dict[str, Any]]) -> Any:
    return cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)


def test_seed_resources_apply_unchanged(crds_installed: Any, namespace: str) -> None:
    docs = [_in_namespace(d, namespace) for d in seed_documents()]
    result = _apply(crds_installed, docs)
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        crds_installed.kubectl("get", "agent", "customer-support-agent", "-n", namespace,
                               "-o", "json").stdout
    )
    # Nothing the user wrote was pruned by the schema.
    assert stored["spec"]["scaling"]["keda"]["triggers"][0]["metadata"]["threshold"] == "50"
    assert stored["spec"]["resources"]["limits"] == {"memory": "1Gi", "cpu": "500m"}
    assert stored["spec"]["model"]["apiKeySecretRef"] == {"name": "openai-api-key", "key": "api-key"}
    # Defaults from the types were applied by the apiserver.
    assert stored["spec"]["tools"][0]["kind"] == "Tool"
    run = json.loads(
        crds_installed.kubectl("get", "workflowrun", "research-report-ai-agents", "-n", namespace,
                               "-o", "json").stdout
    )
    assert run["spec"]["input"] == {"topic": "AI agents on Kubernetes"}


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return mutate


AGENT, SEARCH_TOOL, TICKET_TOOL, MEMORY, WORKFLOW, RUN = range(6)

BAD_OBJECTS: list[tuple[str, int, Mutation, str]] = [
    ("unknown provider", AGENT, _set("spec.model.provider", "gemini"), "spec.model.provider"),
    ("temperature out of range", AGENT, _set("spec.model.temperature", 3.5), "spec.model.temperature"),
    ("negative maxTokens", AGENT, _set("spec.model.maxTokens", -5), "spec.model.maxTokens"),
    ("missing model", AGENT, _delete("spec.model"), "spec.model"),
    ("minReplicas > maxReplicas", AGENT, _set("spec.scaling.minReplicas", 20), "spec.scaling.minReplicas"),
    ("vllm without endpoint", AGENT, _set("spec.model.provider", "vllm"), "spec.model.endpoint"),
    ("anthropic temperature above 1", AGENT,
     lambda d: d["spec"]["model"].update(provider="anthropic", temperature=1.5), "spec.model.temperature"),
    ("memory and memoryRef", AGENT, _set("spec.memoryRef", {"name": "support-memory"}), "spec.memoryRef"),
    ("unknown scaling metric", AGENT, _set("spec.scaling.metrics.0.type", "gpu"), "spec.scaling.metrics[0].type"),
    ("unknown field", AGENT, _set("spec.model.colour", "blue"), "spec.model.colour"),
    ("agent name not a DNS label", AGENT, _set("metadata.name", "1st-support-agent"), "metadata.name"),
    ("unknown tool type", TICKET_TOOL, _set("spec.type", "shell"), "spec.type"),
    ("tool type without its block", TICKET_TOOL, _set("spec.type", "code"), "spec.code"),
    ("tool without description", TICKET_TOOL, _delete("spec.description"), "spec.description"),
    ("bad tool timeout", TICKET_TOOL, _set("spec.api.timeout", "ten seconds"), "spec.api.timeout"),
    ("pinecone index name in capitals", SEARCH_TOOL,
     lambda d: d["spec"]["retrieval"]["vectorStore"].update(type="pinecone", collection="SupportDocs"),
     "spec.retrieval.vectorStore.collection"),
    ("milvus collection with a hyphen", SEARCH_TOOL,
     lambda d: d["spec"]["retrieval"]["vectorStore"].update(type="milvus", collection="support-docs"),
     "spec.retrieval.vectorStore.collection"),
    ("pgvector table name too long for its index", SEARCH_TOOL,
     _set("spec.retrieval.vectorStore.collection", "a" * 50), "spec.retrieval.vectorStore.collection"),
    ("unknown memory type", MEMORY, _set("spec.type", "mongodb"), "spec.type"),
    ("redis memory without host", MEMORY, _delete("spec.config.host"), "spec.config"),
    ("duplicate step names", WORKFLOW, _set("spec.steps.1.name", "research"), "spec.steps[1]"),
    ("no steps", WORKFLOW, _set("spec.steps", []), "spec.steps"),
    ("unknown concurrency policy", WORKFLOW, _set("spec.concurrency.policy", "drop"), "spec.concurrency.policy"),
    ("step with agent and route", WORKFLOW,
     _set("spec.steps.0.route", {"cases": [{"when": "true", "agent": "x"}]}), "spec.steps[0].agent"),
    ("step name not a DNS label", WORKFLOW, _set("spec.steps.0.name", "Research_1"), "spec.steps[0].name"),
    ("retry limit too high", WORKFLOW, _set("spec.errorHandling.retry.limit", 99), "spec.errorHandling.retry.limit"),
    ("run without workflowRef", RUN, _delete("spec.workflowRef"), "spec.workflowRef"),
]


@pytest.mark.parametrize(("case", "index", "mutate", "field"), BAD_OBJECTS, ids=[c[0] for c in BAD_OBJECTS])
def test_bad_objects_are_refused_naming_the_field(
    crds_installed: Any, namespace: str, case: str, index: int, mutate: Mutation, field: str
) -> None:
    doc = _in_namespace(seed_documents()[index], namespace)
    mutate(doc)
    result = _apply(crds_installed, [doc])
    assert result.returncode != 0, f"{case}: the apiserver accepted it"
    assert field in result.stderr, f"{case}: {result.stderr}"
    name = doc["metadata"]["name"]
    missing = crds_installed.kubectl("get", doc["kind"].lower(), name, "-n", namespace, check=False)
    assert missing.returncode != 0, f"{case}: a half-made object was left behind"


@pytest.mark.parametrize(("store", "collection"), [
    ("pgvector", "support-docs"), ("qdrant", "support.docs-v2"), ("pinecone", "support-docs"),
    ("milvus", "support_docs")])
def test_collection_names_follow_each_stores_own_rules(
    crds_installed: Any, namespace: str, store: str, collection: str
) -> None:
    doc = _in_namespace(seed_documents()[SEARCH_TOOL], namespace)
    doc["spec"]["retrieval"]["vectorStore"].update(type=store, collection=collection)
    result = _apply(crds_installed, [doc])
    assert result.returncode == 0, result.stderr


def test_workflow_ref_is_immutable(crds_installed: Any, namespace: str) -> None:
    run = _in_namespace(seed_documents()[RUN], namespace)
    assert _apply(crds_installed, [run]).returncode == 0
    run["spec"]["workflowRef"]["name"] = "another"
    result = _apply(crds_installed, [run])
    assert result.returncode != 0
    assert "workflowRef is immutable" in result.stderr


def test_kubectl_explain(crds_installed: Any) -> None:
    out = crds_installed.kubectl("explain", "agent.spec.model.provider").stdout
    assert "openai" in out and "vllm" in out and "OpenAI-compatible" in out
    out = crds_installed.kubectl("explain", "workflow.spec.concurrency.policy").stdout
    assert "queue" in out and "reject" in out and "replace" in out


def test_printer_columns_and_category(crds_installed: Any, namespace: str) -> None:
    docs = [_in_namespace(d, namespace) for d in seed_documents()]
    assert _apply(crds_installed, docs).returncode == 0
    agents = crds_installed.kubectl("get", "agents", "-n", namespace).stdout
    header = agents.splitlines()[0].split()
    assert header[:5] == ["NAME", "PROVIDER", "MODEL", "READY", "REPLICAS"]
    assert "gpt-4-turbo" in agents
    runs = crds_installed.kubectl("get", "wfr", "-n", namespace).stdout.splitlines()[0].split()
    assert runs[:5] == ["NAME", "WORKFLOW", "PHASE", "STARTED", "DURATION"]
    everything = crds_installed.kubectl("get", "kagent", "-n", namespace, "-o", "name").stdout.split()
    assert set(everything) == {
        "agent.kagent.dev/customer-support-agent",
        "tool.kagent.dev/search-knowledge-base",
        "tool.kagent.dev/create-ticket",
        "memory.kagent.dev/support-memory",
        "workflow.kagent.dev/research-report",
        "workflowrun.kagent.dev/research-report-ai-agents",
    }
