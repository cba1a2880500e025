"""The agent runtime's tools: one pydantic-ai toolset per Tool resource.

- ``api``: an HTTP call built from the arguments (:mod:`.api`);
- ``retrieval``: embed the query, search a vector store (:mod:`.retrieval`, :mod:`.embeddings`,
  :mod:`.vectorstore`);
- ``code``: model-written Python in a sandbox (:mod:`.code`, :mod:`.sandbox`);
- ``mcp``: a remote MCP server's tools (:mod:`.mcp`);
- ``agent``: another Agent over A2A (:mod:`.agent`);
- ``human`` belongs to the runtime core (it pauses the A2A task), so it has no toolset here.

Every toolset counts its calls (``agent_tool_calls_total`` by tool and outcome) and times them
(``agent_tool_duration_seconds``); failures reach the model as tool errors with secret values
redacted, never as an aborted run.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai.toolsets import AbstractToolset

from kagent.api.tool import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.agent import agent_toolset, ask_agent
from kagent.runtime.tools.base import model_tool_name
from kagent.runtime.tools.embeddings import EmbeddingError, embed
from kagent.runtime.tools.mcp import list_mcp_tools
from kagent.runtime.tools.sandbox import SandboxLimits, SandboxResult, run_python
from kagent.runtime.tools.vectorstore import (
    Passage,
    VectorStore,
    VectorStoreError,
    open_vector_store,
)

__all__ = [
    "EmbeddingError",
    "Passage",
    "SandboxLimits",
    "SandboxResult",
    "VectorStore",
    "VectorStoreError",
    "agent_toolset",
    "ask_agent",
    "build_toolset",
    "embed",
    "list_mcp_tools",
    "model_tool_name",
    "open_vector_store",
    "run_python",
]


async def build_toolset(tool: Tool, ctx: RuntimeContext) -> AbstractToolset[Any] | None:
    """The toolset for one Tool resource; None for ``human``, which the runtime core handles.

    ``api`` reads its Secret on each call, so a missing Secret fails that call (the model is
    told); ``mcp`` needs its header Secrets to connect and raises ``MissingSecretError`` here.
    """
    kind = tool.spec.type
    if kind == "human":
        return None
    if kind == "api":
        from kagent.runtime.tools.api import build_api_toolset

        return build_api_toolset(tool, ctx)
    if kind == "retrieval":
        from kagent.runtime.tools.retrieval import build_retrieval_toolset

        return build_retrieval_toolset(tool, ctx)
    if kind == "code":
        from kagent.runtime.tools.code import build_code_toolset

        return build_code_toolset(tool, ctx)
    if kind == "mcp":
        from kagent.runtime.tools.mcp import build_mcp_toolset

        return build_mcp_toolset(tool, ctx)
    if kind == "agent":
        assert tool.spec.agent is not None, "a Tool of type agent has an agent block"
        return agent_toolset(tool.spec.agent.name, tool.spec.description, ctx,
                             tool_name=tool.metadata.name)
    raise ValueError(f"unknown tool type {kind!r}")
