"""Agent as a tool: another Agent in the same namespace, called over A2A with the shared client
(:mod:`kagent.agentclient`), which speaks A2A 1.0 or 0.3 as the called agent's card says.

Every call carries the chain of agents that led to it (``X-Kagent-Agent-Chain``:
``namespace/name`` entries, oldest first). An agent refuses, with a clear error to its
model, a call that would reach an agent already in the chain (a cycle: A asks B asks A …) or
make the chain deeper than ``MAX_AGENT_DEPTH``. A caller can only make its own chain stricter
by sending the header, never looser.
"""

from __future__ import annotations

import contextvars
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


CHAIN_HEADER = "X-Kagent-Agent-Chain"
MAX_AGENT_DEPTH = 8
"""Agents in one chain of agent-as-tool calls, the first caller included."""
MAX_CHAIN_HEADER = 64
"""Entries read from an incoming chain header (more means the chain is too deep anyway)."""

_incoming_chain: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "kagent_agent_chain", default=())


def parse_chain(header: str) -> tuple[str, ...]:
    """The agents named by an incoming chain header (bounded, blanks dropped)."""
    entries = [e.strip() for e in header.split(",", MAX_CHAIN_HEADER)[:MAX_CHAIN_HEADER]]
    return tuple(e[:320] for e in entries if e)


def set_incoming_chain(chain: tuple[str, ...]) -> None:
    """The chain of the request being served (set by the request guard)."""
    _incoming_chain.set(chain)


def outgoing_chain(ctx: RuntimeContext, target: str) -> tuple[str, ...]:
    """The chain to send with a call from this agent to ``target``; raises ToolFailed on a
    cycle or when the chain would be too deep."""
    me = f"{ctx.namespace}/{ctx.agent_name}"
    chain = tuple(e for e in _incoming_chain.get() if e != me) + (me,)
    called = f"{ctx.namespace}/{target}"
    if called in chain:
        path = " -> ".join((*chain, called))
        raise ToolFailed(f"calling agent {target} would make a cycle of agent calls ({path}); "
                         "answer without it")
    if len(chain) + 1 > MAX_AGENT_DEPTH:
        raise ToolFailed(f"calling agent {target} would make a chain of {len(chain) + 1} "
                         f"agents, more than the limit of {MAX_AGENT_DEPTH}; answer without it")
    return chain


async def ask_agent(agent_name: str, message: str, ctx: RuntimeContext,
                    timeout: float = DEFAULT_TIMEOUT) -> str:
    """Send ``message`` to the agent and return its final text; failures fail the tool call."""
    chain = outgoing_chain(ctx, agent_name)
    try:
        return await ask_agent_at(ctx.agent_url(agent_name), agent_name, message, timeout=timeout,
                                  headers={CHAIN_HEADER: ",".join(chain)})
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
