"""Reading an agent's runtime configuration from the manifests a user applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kagent.api.base import SecretKeySelector
from kagent.api.secrets import secret_env_name
from kagent.runtime.config import ConfigError, build_runtime_config, load_runtime_config
from tests.helpers import EXAMPLES
from tests.runtime_manifests import agent, human_tool, memory, model, secret, tool

MODEL = model("openai", "http://127.0.0.1:1")


def test_seed_agent_with_its_tools_and_memory_folder() -> None:
    config = load_runtime_config([EXAMPLES / "customer-support" / "agent.yaml",
                                  EXAMPLES / "customer-support" / "tools.yaml"],
                                 environ={})
    assert config.name == "customer-support-agent"
    assert config.namespace == "ai-agents"
    assert [t.metadata.name for t in config.tools] == ["search-knowledge-base", "create-ticket"]
    assert config.memory is not None and config.memory.type == "redis"
    assert config.memory.config is not None and config.memory.config.max_history == 50


def test_memory_ref_resolves_to_the_memory_resource() -> None:
    config = build_runtime_config([
        agent("a", MODEL, memoryRef={"name": "shared"}),
        memory("shared", {"type": "postgres", "config": {"host": "pg", "ttl": 60}}),
    ], environ={})
    assert config.memory is not None and config.memory.type == "postgres"
    assert config.memory.config is not None and config.memory.config.ttl == 60


def test_agent_tools_are_kept_apart_from_tool_resources() -> None:
    config = build_runtime_config([
        agent("a", MODEL, tools=[{"name": "ask"}, {"name": "researcher", "kind": "Agent"}]),
        human_tool("ask"),
        tool("unused", {"type": "human", "description": "not referenced"}),
    ], environ={})
    assert [t.metadata.name for t in config.tools] == ["ask"]
    assert [r.name for r in config.agent_tools] == ["researcher"]


def test_missing_tool_names_the_tool_and_the_fix() -> None:
    with pytest.raises(ConfigError, match='uses Tool "ticket".*pass its manifest with -f'):
        build_runtime_config([agent("a", MODEL, tools=[{"name": "ticket"}])], environ={})


def test_missing_memory_ref_is_explained() -> None:
    with pytest.raises(ConfigError, match='Memory "gone" \\(memoryRef\\)'):
        build_runtime_config([agent("a", MODEL, memoryRef={"name": "gone"})], environ={})


def test_several_agents_need_a_name() -> None:
    documents = [agent("one", MODEL), agent("two", MODEL)]
    with pytest.raises(ConfigError, match="set KAGENT_AGENT_NAME"):
        build_runtime_config(documents, environ={})
    assert build_runtime_config(documents, environ={"KAGENT_AGENT_NAME": "two"}).name == "two"
    with pytest.raises(ConfigError, match='no Agent named "three"'):
        build_runtime_config(documents, agent_name="three", environ={})


def test_no_agent_and_invalid_documents() -> None:
    with pytest.raises(ConfigError, match="no Agent"):
        build_runtime_config([human_tool()], environ={})
    bad = agent("a", {"provider": "openai"})
    with pytest.raises(ConfigError, match="spec.model.name"):
        build_runtime_config([bad], environ={})


def test_secrets_from_manifests_and_from_the_pod_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump_all([agent("a", MODEL), secret()]))
    ref = SecretKeySelector(name="model-key", key="api-key")
    from_file = load_runtime_config([path], environ={})
    assert from_file.secrets.get(ref) == "sk-test-key-0123456789"
    # In a pod the Deployment sets one variable per key; it wins over a manifest.
    from_env = load_runtime_config([path], environ={secret_env_name(ref): "from-env"})
    assert from_env.secrets.get(ref) == "from-env"


def test_namespace_comes_from_the_pod_environment() -> None:
    config = build_runtime_config([agent("a", MODEL)], environ={"KAGENT_NAMESPACE": "prod"})
    assert config.namespace == "prod"


def test_workflows_in_a_folder_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent("a", MODEL)))
    (tmp_path / "workflow.yaml").write_text((EXAMPLES / "research-report" / "workflow.yaml").read_text())
    assert load_runtime_config([tmp_path], environ={}).name == "a"
