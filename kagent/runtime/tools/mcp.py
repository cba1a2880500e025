"""Tool type ``mcp``: a remote MCP server's tools, over streamable HTTP or SSE.

The agent loop uses pydantic-ai's MCP client toolset; the controller's discovery
(:func:`list_mcp_tools`, for ``status.discoveredTools``) uses the official ``mcp`` client
directly, so it needs no agent loop. Both send the same headers (``headersFrom`` Secrets) and
offer only ``toolNames`` when that list is given. The MCP SDK carries the W3C trace context of
each request in its ``_meta`` (``traceparent``), so server spans join the agent's trace.

Discovery is bounded, since the server is someone else's: the whole listing (connection, every
page) within ``DISCOVERY_TIMEOUT`` seconds (or the Tool's own ``timeout`` when shorter), at
most ``MAX_PAGES`` pages and ``MAX_DISCOVERED_TOOLS`` tools (more is an error naming the bound
— list the ones to use in ``toolNames``), names longer than ``MAX_NAME_CHARS`` refused, and
descriptions cut to ``MAX_DESCRIPTION_CHARS``, so status stays small.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kagent.api.base import parse_duration
from kagent.api.tool import McpTool, Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.base import DEFAULT_MAX_RETRIES, Redactor, metered, model_tool_name

CONNECT_TIMEOUT = 10.0
DISCOVERY_TIMEOUT = 30.0
MAX_PAGES = 100
MAX_DISCOVERED_TOOLS = 500
MAX_NAME_CHARS = 128
MAX_DESCRIPTION_CHARS = 1024


class DiscoveryLimitExceeded(Exception):
    """The server offers more than discovery accepts."""


def mcp_headers(mcp: McpTool, ctx: RuntimeContext,
                redactor: Redactor | None = None) -> dict[str, str]:
    headers = {}
    for header in mcp.headers_from or []:
        value = ctx.secrets.get(header.secret_key_ref)
        if redactor is not None:
            redactor.add(value)
        headers[header.name] = value
    return headers


def build_mcp_toolset(tool: Tool, ctx: RuntimeContext) -> Any:
    from fastmcp.client import Client as FastMCPClient
    from fastmcp.client.transports import SSETransport, StreamableHttpTransport
    from pydantic_ai.mcp import MCPToolset

    mcp = tool.spec.mcp
    assert mcp is not None, "a Tool of type mcp has an mcp block"
    redactor = Redactor(ctx)
    headers = mcp_headers(mcp, ctx, redactor)
    timeout = parse_duration(mcp.timeout).total_seconds()
    if mcp.transport == "sse":
        transport: Any = SSETransport(mcp.url, headers=headers or None, sse_read_timeout=300.0)
    else:
        transport = StreamableHttpTransport(mcp.url, headers=headers or None)
    client = FastMCPClient(transport, timeout=timeout, init_timeout=CONNECT_TIMEOUT,
                           name=f"kagent-{ctx.agent_name}")
    name = tool.metadata.name or "mcp"
    toolset: Any = MCPToolset(client, id=f"mcp-{model_tool_name(name)}",
                              tool_error_behavior="failed", max_retries=DEFAULT_MAX_RETRIES)
    if mcp.tool_names:
        allowed = frozenset(mcp.tool_names)
        toolset = toolset.filtered(lambda _ctx, tool_def: tool_def.name in allowed)
    return metered(toolset, ctx, redactor)


async def list_mcp_tools(tool: Tool, ctx: RuntimeContext) -> list[dict[str, Any]]:
    """The server's tools that this Tool passes on (all, or those in ``toolNames``), as
    ``{"name", "description"}``, in the server's order. Raises if the server cannot be reached
    or refuses; the message never contains header values."""
    mcp = tool.spec.mcp
    if mcp is None:
        raise ValueError(f"Tool {tool.metadata.name} is not of type mcp")
    redactor = Redactor(ctx)
    headers = mcp_headers(mcp, ctx, redactor)
    timeout = parse_duration(mcp.timeout).total_seconds()
    try:
        async with asyncio.timeout(min(timeout, DISCOVERY_TIMEOUT)):
            found = await _discover(mcp, headers, timeout)
    except DiscoveryLimitExceeded as exc:
        raise RuntimeError(redactor.text(f"MCP server {mcp.url}: {exc}")) from None
    except TimeoutError:
        raise RuntimeError(redactor.text(
            f"MCP server {mcp.url}: listing its tools took longer than "
            f"{min(timeout, DISCOVERY_TIMEOUT):g} s")) from None
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise RuntimeError(redactor.text(f"MCP server {mcp.url}: {first}")) from None
    except Exception as exc:  # noqa: BLE001 - every failure is reported naming the server
        raise RuntimeError(
            redactor.text(f"MCP server {mcp.url}: {type(exc).__name__}: {exc}")
        ) from None
    if mcp.tool_names:
        wanted = set(mcp.tool_names)
        found = [t for t in found if t["name"] in wanted]
    return found


async def _discover(mcp: McpTool, headers: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    import httpx2
    from mcp.client import Client
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    if mcp.transport == "sse":
        transport: Any = sse_client(mcp.url, headers=headers or None, timeout=timeout)
        return await _list(Client(transport, read_timeout_seconds=timeout))
    async with httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(timeout, read=timeout)
    ) as http:
        transport = streamable_http_client(mcp.url, http_client=http)
        return await _list(Client(transport, read_timeout_seconds=timeout))


async def _list(client: Any) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    async with client:
        cursor = None
        for _ in range(MAX_PAGES):  # a server that pages forever must not hang discovery
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                tools.append(bounded_tool(tool.name, tool.description))
            if len(tools) > MAX_DISCOVERED_TOOLS:
                raise DiscoveryLimitExceeded(
                    f"it offers more than {MAX_DISCOVERED_TOOLS} tools; a Tool takes at most "
                    f"{MAX_DISCOVERED_TOOLS}")
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            raise DiscoveryLimitExceeded(f"its tool list has more than {MAX_PAGES} pages")
    return tools


def bounded_tool(name: str, description: str | None) -> dict[str, Any]:
    """One discovered tool for status: a name within bounds, a description cut to size."""
    if len(name) > MAX_NAME_CHARS:
        raise DiscoveryLimitExceeded(
            f"it offers a tool whose name is longer than {MAX_NAME_CHARS} characters "
            f"({name[:40]}…)")
    if description and len(description) > MAX_DESCRIPTION_CHARS:
        description = description[:MAX_DESCRIPTION_CHARS - 1] + "…"
    return {"name": name, "description": description}
