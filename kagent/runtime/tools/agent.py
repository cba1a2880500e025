"""Agent as a tool: another Agent in the same namespace, called over A2A with the shared client
(:mod:`kagent.agentclient`)."""

from __future__ import annotations

from typing import Any

from pydantic_ai.exceptions import ModelRetry, ToolFailed

from kagent.agentclient import DEFAULT_TIMEOUT, AgentCallError, ask_agent_at
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.base import Redactor, SingleToolToolset, metered, model_tool_name

MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {
            "type": "string",
            "description": "The request for the agent. It does not see this conversation, so "
            "include everything it needs.",
        }
    },
    "required": ["message"],
}


async def ask_agent(agent_name: str, message: str, ctx: RuntimeContext,
                    timeout: float = DEFAULT_TIMEOUT) -> str:
    """Send ``message`` to the agent and return its final text; failures fail the tool call."""
    try:
        return await ask_agent_at(ctx.agent_url(agent_name), agent_name, message, timeout=timeout)
    except AgentCallError as error:
        raise ToolFailed(str(error)) from None


def agent_toolset(agent_name: str, description: str | None, ctx: RuntimeContext,
                  tool_name: str | None = None) -> Any:
    """A tool that asks the Agent ``agent_name`` (same namespace) over A2A."""
    name = model_tool_name(tool_name or agent_name)

    async def call(arguments: dict[str, Any]) -> Any:
        message = arguments.get("message")
        if not isinstance(message, str) or not message.strip():
            raise ModelRetry("give the request for the agent in 'message'")
        return await ask_agent(agent_name, message, ctx)

    toolset = SingleToolToolset(
        name=name,
        description=description or f"Ask the agent {agent_name} to do something and get its "
        "answer.",
        schema=MESSAGE_SCHEMA, handler=call, toolset_id=f"kagent-agent-{name}",
    )
    return metered(toolset, ctx, Redactor(ctx))
