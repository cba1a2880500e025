"""The toolset plumbing shared by every tool type: dispatch by type, failures turned into
answers the model reads (secrets redacted), metrics, and connection settings for pgvector."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from kagent.api import Tool
from kagent.api.base import SecretKeySelector
from kagent.api.vectorstore import VectorStore as VectorStoreSpec
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import build_toolset
from kagent.runtime.tools.base import Redactor, SingleToolToolset, metered
from kagent.runtime.tools.vectorstore import Passage, pgvector_conninfo, vector_literal

SECRET = "very-secret-value"


def context() -> RuntimeContext:
    secrets = SecretResolver([{"metadata": {"name": "s"}, "stringData": {"k": SECRET}}],
                             environ={})
    return RuntimeContext(agent_name="unit-agent", namespace="n", secrets=secrets)


async def test_human_tools_belong_to_the_core() -> None:
    tool = Tool.model_validate({"kind": "Tool", "metadata": {"name": "ask"},
                                "spec": {"type": "human", "description": "Ask a person.",
                                         "human": {}}})
    assert await build_toolset(tool, context()) is None


def call_once_then_answer(tool: str, args: dict[str, Any]) -> FunctionModel:
    """pydantic-ai's function model: call ``tool`` once, then answer with what it returned."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [p for m in messages for p in getattr(m, "parts", [])
                    if isinstance(p, (ToolReturnPart, RetryPromptPart))]
        if returned:
            last = returned[-1]
            text = (last.model_response_str() if isinstance(last, ToolReturnPart)
                    else last.model_response())
            return ModelResponse(parts=[TextPart(text)])
        return ModelResponse(parts=[ToolCallPart(tool, args)])

    return FunctionModel(respond)


async def test_unexpected_exceptions_become_redacted_tool_errors_and_are_counted() -> None:
    ctx = context()
    ctx.secrets.get(ctx_ref())  # handed out, so the resolver redacts it too

    async def handler(arguments: dict[str, Any]) -> Any:
        raise RuntimeError(f"backend rejected credential {SECRET} for {arguments['q']}")

    toolset = metered(SingleToolToolset(name="lookup", description="d", schema={
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        handler=handler), ctx, Redactor(ctx))
    before = REGISTRY.get_sample_value("agent_tool_calls_total", {
        "agent": "unit-agent", "tool": "lookup", "outcome": "error"}) or 0
    result = await Agent(call_once_then_answer("lookup", {"q": "item-7"}),
                         toolsets=[toolset]).run("go")
    assert "RuntimeError: backend rejected credential [REDACTED] for item-7" in result.output
    assert SECRET not in result.output
    assert REGISTRY.get_sample_value("agent_tool_calls_total", {
        "agent": "unit-agent", "tool": "lookup", "outcome": "error"}) == before + 1
    assert (REGISTRY.get_sample_value("agent_tool_duration_seconds_count", {
        "agent": "unit-agent", "tool": "lookup"}) or 0) >= 1


def ctx_ref() -> SecretKeySelector:
    return SecretKeySelector(name="s", key="k")


async def test_successful_results_are_redacted_too() -> None:
    ctx = context()
    redactor = Redactor(ctx)
    redactor.add(SECRET)

    async def handler(arguments: dict[str, Any]) -> Any:
        return {"echo": f"token={SECRET}", "nested": [SECRET]}

    toolset = metered(SingleToolToolset(name="echo", description="d",
                                        schema={"type": "object", "properties": {}},
                                        handler=handler), ctx, redactor)
    result = await Agent(call_once_then_answer("echo", {}), toolsets=[toolset]).run("go")
    assert SECRET not in result.output
    assert "token=[REDACTED]" in result.output


def test_pgvector_connection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGUSER", raising=False)

    def spec(**connection: Any) -> VectorStoreSpec:
        return VectorStoreSpec.model_validate({"collection": "docs", "connection": connection})

    assert pgvector_conninfo(spec(url="postgresql://pg.data:5432/vectors"), "pw") == (
        "postgresql://postgres@pg.data:5432/vectors", "pw")
    assert pgvector_conninfo(spec(url="postgresql://app@pg:5432/"), None) == (
        "postgresql://app@pg:5432/", None)
    assert pgvector_conninfo(spec(host="pg", port=6543, database="kb"), "pw") == (
        "postgresql://postgres@pg:6543/kb", "pw")
    assert pgvector_conninfo(spec(url="postgresql://pg/x"), "postgresql://u:p@h/db") == (
        "postgresql://u:p@h/db", None)
    assert pgvector_conninfo(spec(url="postgresql://a@pg:5432"), None)[0] == \
        "postgresql://a@pg:5432"


def test_vector_literal_and_passage_source() -> None:
    assert vector_literal([1, 0.5, -2e-3]) == "[1.0,0.5,-0.002]"
    assert Passage("t", 0.9, {"title": "Guide", "url": "https://x"}).source == "https://x"
    assert Passage("t", 0.9, {}).source is None
