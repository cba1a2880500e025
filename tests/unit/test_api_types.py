"""The API types accept the seed's resources and refuse bad ones with the field named."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from kagent.api import Agent, Workflow, parse_duration
from kagent.api.manifests import ManifestError, load_documents, parse_resource
from kagent.api.parameters import Parameter, parameters_json_schema
from tests.helpers import seed_documents


def test_seed_resources_parse_and_round_trip() -> None:
    docs = seed_documents()
    assert [d["kind"] for d in docs] == ["Agent", "Tool", "Tool", "Memory", "Workflow", "WorkflowRun"]
    for doc in docs:
        resource = parse_resource(doc)
        wire = resource.to_wire()
        # Round trip: what we write back is what was read, plus defaults.
        assert parse_resource(wire).to_wire() == wire
    agent = parse_resource(docs[0])
    assert isinstance(agent, Agent)
    assert agent.spec.model.provider == "openai"
    assert agent.spec.model.api_key_secret_ref is not None
    assert agent.spec.model.api_key_secret_ref.key == "api-key"
    assert agent.spec.memory is not None and agent.spec.memory.config is not None
    assert agent.spec.memory.config.max_history == 50
    assert agent.spec.scaling is not None and agent.spec.scaling.keda is not None
    assert agent.spec.scaling.keda.triggers is not None
    assert agent.spec.scaling.keda.triggers[0].metadata["threshold"] == "50"
    assert agent.spec.resources is not None and agent.spec.resources.limits == {
        "memory": "1Gi",
        "cpu": "500m",
    }


def test_workflow_defaults() -> None:
    workflow = parse_resource(seed_documents()[4])
    assert isinstance(workflow, Workflow)
    steps = workflow.spec.steps
    assert [s.name for s in steps] == ["research", "analyze-market", "analyze-tech", "write"]
    assert [s.parallel for s in steps] == [False, True, True, False]
    assert workflow.spec.concurrency is not None and workflow.spec.concurrency.policy == "queue"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("spec", "model", "provider"), "gemini", "spec.model.provider"),
        (("spec", "model", "temperature"), 7, "spec.model.temperature"),
        (("spec", "model", "maxTokens"), -1, "spec.model.maxTokens"),
        (("spec", "tools", 0, "kind"), "Service", "spec.tools[0].kind"),
        (("spec", "memory", "type"), "mongodb", "spec.memory.type"),
        (("spec", "scaling", "metrics", 0, "type"), "gpu", "spec.scaling.metrics[0].type"),
        (("spec", "model", "colour"), "blue", "spec.model.colour"),
    ],
)
def test_bad_agent_names_the_field(path: tuple, value: object, field: str) -> None:
    doc = copy.deepcopy(seed_documents()[0])
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ManifestError) as error:
        parse_resource(doc)
    assert field in str(error.value)
    assert "customer-support-agent" in str(error.value)


def test_missing_model_is_named() -> None:
    doc = copy.deepcopy(seed_documents()[0])
    del doc["spec"]["model"]
    with pytest.raises(ManifestError, match=r"spec\.model: Field required"):
        parse_resource(doc)


def test_unknown_kind_and_version_are_refused() -> None:
    with pytest.raises(ManifestError, match="not a Kagent kind"):
        parse_resource({"apiVersion": "kagent.dev/v1alpha1", "kind": "Gadget"})
    with pytest.raises(ManifestError, match="apiVersion of Agent must be kagent.dev/v1alpha1"):
        parse_resource({"apiVersion": "kagent.dev/v2", "kind": "Agent"})


def test_load_documents_flattens_lists_and_reports_bad_yaml() -> None:
    text = "kind: List\nitems:\n- {kind: A}\n- {kind: B}\n---\nkind: C\n"
    assert [d["kind"] for d in load_documents(text)] == ["A", "B", "C"]
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_documents("a: [", source="x.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5d", "m5", "-1s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parameters_json_schema() -> None:
    params = [
        Parameter(name="query", type="string", required=True, description="what"),
        Parameter(name="limit", type="integer", enum=["1", "5"]),
    ]
    assert parameters_json_schema(params) == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what"},
            "limit": {"type": "integer", "enum": [1, 5]},
        },
        "required": ["query"],
    }


@pytest.mark.parametrize(("store", "collection", "ok"), [
    ("pgvector", "support-docs", True), ("pgvector", "a" * 49, True), ("pgvector", "a" * 50, False),
    ("milvus", "support_docs", True), ("milvus", "support-docs", False), ("milvus", "9docs", False),
    ("pinecone", "support-docs", True), ("pinecone", "Support-Docs", False),
    ("pinecone", "docs-", False), ("pinecone", "a" * 46, False),
    ("qdrant", "support.docs-v2", True), ("qdrant", "support/docs", False),
])
def test_collection_names_follow_the_stores_rules(store: str, collection: str, ok: bool) -> None:
    from pydantic import ValidationError

    from kagent.api.vectorstore import VectorStore

    spec = {"type": store, "connection": {"url": "http://store:1"}, "collection": collection}
    if ok:
        assert VectorStore.model_validate(spec).collection == collection
    else:
        with pytest.raises(ValidationError, match="collection"):
            VectorStore.model_validate(spec)
