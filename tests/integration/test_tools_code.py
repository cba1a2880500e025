"""The code tool driven by a real pydantic-ai agent (scripted model): the program really runs
in the sandbox and the model reads its output, the limit that stopped it, or why the sandbox
refused to run it; the controller marks code Tools with their isolation and the webhook warns
about weaker isolation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kagent.api import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import build_toolset
from kagent.mockllm import MockLLM
from tests.integration.test_controller_agents import condition, get, wait_for

AGENT = "code-test-agent"


@pytest.fixture
async def ctx() -> AsyncIterator[RuntimeContext]:
    context = RuntimeContext(agent_name=AGENT, namespace="default",
                             secrets=SecretResolver([], environ={}))
    yield context
    await context.http.aclose()


def code_tool(**code: Any) -> Tool:
    return Tool.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
        "metadata": {"name": "python", "namespace": "default"},
        "spec": {"type": "code", "description": "Run Python.", "code": code},
    })


async def run(tool: Tool, ctx: RuntimeContext, program: str) -> tuple[str, MockLLM]:
    script = {"rules": [
        {"has_tool_result": False, "tools_offered": "python",
         "tool_calls": [{"name": "python", "arguments": {"code": program}}]},
        {"has_tool_result": "python", "content": "OUT {{tool_result}}"},
    ]}
    toolset = await build_toolset(tool, ctx)
    with MockLLM(script) as llm:
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(
            base_url=llm.openai_base_url, api_key="sk-test"))
        result = await Agent(model, toolsets=[toolset]).run("Compute it.")
        return result.output, llm


def calls(outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "agent_tool_calls_total", {"agent": AGENT, "tool": "python", "outcome": outcome}
    ) or 0.0


async def test_program_output_reaches_the_model_with_trace_context(ctx: RuntimeContext) -> None:
    before = calls("success")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        output, _ = await run(code_tool(), ctx,
                              "import os, statistics\n"
                              "print(statistics.mean([2, 4, 9]))\n"
                              "print(os.environ['TRACEPARENT'].split('-')[1])\n")
    mean, trace_id = output.removeprefix("OUT ").splitlines()
    assert mean == "5"
    assert trace_id == f"{span.get_span_context().trace_id:032x}"
    assert calls("success") == before + 1


async def test_cpu_limit_is_reported_to_the_model(ctx: RuntimeContext) -> None:
    before = calls("error")
    output, _ = await run(code_tool(cpuTime="1s", timeout="20s"), ctx,
                          "print('spinning', flush=True)\nwhile True:\n    pass\n")
    assert "killed: CPU time limit 1s exceeded" in output
    assert "spinning" in output
    assert calls("error") == before + 1


async def test_network_attempt_fails_inside_the_agent_tool(ctx: RuntimeContext) -> None:
    output, _ = await run(code_tool(), ctx,
                          "import urllib.request\n"
                          "urllib.request.urlopen('http://127.0.0.1:9/', timeout=2)\n")
    assert "exit status 1" in output
    assert "network access is not allowed" in output or "unreachable" in output


async def test_a_sandbox_without_its_layers_refuses_and_says_why(
        ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A kernel or pod without seccomp (simulated from the agent's own environment, which the
    model cannot set): the program does not run, the model is told why, the log says so."""
    monkeypatch.setenv("KAGENT_SANDBOX_DISABLE", "seccomp")
    before = calls("error")
    with caplog.at_level(logging.ERROR, logger="kagent.runtime.tools.code"):
        output, _ = await run(code_tool(), ctx, "print('RAN')")
    assert "RAN" not in output
    assert "the code sandbox is not available here, so the program was not run" in output
    assert "seccomp: disabled" in output and "do not retry" in output
    assert calls("error") == before + 1
    (record,) = [r for r in caplog.records if r.name == "kagent.runtime.tools.code"]
    assert record.levelno == logging.ERROR and "seccomp: disabled" in record.getMessage()


async def test_best_effort_runs_without_a_layer_and_warns(
        ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("KAGENT_SANDBOX_DISABLE", "seccomp")
    with caplog.at_level(logging.WARNING, logger="kagent.runtime.tools.code"):
        output, _ = await run(code_tool(isolation="best-effort"), ctx, "print('RAN')")
    assert output == "OUT RAN"
    assert any("weaker isolation" in r.getMessage() and "seccomp: disabled" in r.getMessage()
               for r in caplog.records)


@pytest.mark.integration
def test_code_tools_carry_their_isolation_condition_and_weaker_isolation_is_warned(
        kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    tool = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
            "metadata": {"name": "python", "namespace": namespace},
            "spec": {"type": "code", "description": "Run Python.", "code": {}}}
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(tool))
    assert "isolation" not in result.stderr
    strict = wait_for(lambda: condition(get(cp, "tool", "python", namespace), "Isolated"),
                      what="Isolated condition")
    assert (strict["status"], strict["reason"]) == ("True", "Strict")
    tool["spec"]["code"]["isolation"] = "best-effort"
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(tool))
    assert "Warning: spec.code.isolation: best-effort runs model-written code" in result.stderr
    weaker = wait_for(lambda: (c := condition(get(cp, "tool", "python", namespace), "Isolated"))
                      and c["reason"] == "WeakerIsolationAccepted" and c, what="weaker isolation")
    assert weaker["status"] == "False"
