"""The shared A2A client against a hostile or broken agent served over real HTTP: bounded card
and answer bodies, one card fetch however many calls wait for it, and a card dropped when a
call through it fails. (Answers from a real agent: tests/integration/test_workflows.py.)"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Self

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kagent.agentclient import AgentCallError, AgentClient


class HostileAgent:
    """An HTTP server whose card and answers misbehave on purpose; counts card fetches."""

    def __init__(self) -> None:
        self.card_fetches = 0
        self.card_delay = 0.0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/{agent}/.well-known/agent-card.json", self.card),
            Route("/{agent}", self.answer, methods=["POST"]),
        ])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error", lifespan="off"))

    async def card(self, request: Request) -> Response:
        self.card_fetches += 1
        await asyncio.sleep(self.card_delay)
        agent = request.path_params["agent"]
        if agent == "big-card":
            return Response(b"{" + b" " * (2 << 20) + b"}", media_type="application/json")
        # the "hang-up" agent answers on a socket that closes without a byte of answer
        base = f"http://127.0.0.1:{self.hang_up_port}" if agent == "hang-up" else self.url
        return JSONResponse({
            "name": agent, "description": "test", "version": "1",
            "supportedInterfaces": [{"url": f"{base}/{agent}", "protocolBinding": "JSONRPC",
                                     "protocolVersion": "1.0"}],
            "capabilities": {}, "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"], "skills": [],
        })

    async def answer(self, request: Request) -> Response:
        agent = request.path_params["agent"]
        if agent == "huge-answer":
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(64):
                    yield b" " * 1024
            return StreamingResponse(chunks(), media_type="application/json")
        return Response("broken", status_code=500)

    async def hang_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hung_up += 1
        writer.close()

    async def __aenter__(self) -> Self:
        self.hung_up = 0
        self.hang_up_server = await asyncio.start_server(self.hang_up, "127.0.0.1", 0)
        self.hang_up_port = self.hang_up_server.sockets[0].getsockname()[1]
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task
        self.hang_up_server.close()


async def test_a_card_over_its_bound_is_refused() -> None:
    async with HostileAgent() as agent:
        client = AgentClient()
        with pytest.raises(AgentCallError, match="larger than 1048576 bytes"):
            await client.ask(f"{agent.url}/big-card", "big", "hi", timeout=10)
        await client.aclose()


async def test_an_answer_over_its_bound_is_refused() -> None:
    async with HostileAgent() as agent:
        client = AgentClient(max_answer_bytes=16 * 1024)
        with pytest.raises(AgentCallError, match="larger than 16384 bytes"):
            await client.ask(f"{agent.url}/huge-answer", "huge", "hi", timeout=10)
        await client.aclose()


async def test_one_card_fetch_serves_every_waiting_call_and_a_failed_call_drops_it() -> None:
    async with HostileAgent() as agent:
        agent.card_delay = 0.2
        client = AgentClient()
        url = f"{agent.url}/broken"
        results = await asyncio.gather(*(client.ask(url, "broken", "hi", timeout=10)
                                         for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, AgentCallError) and "HTTP Error 500" in str(r) for r in results)
        assert agent.card_fetches == 1
        with pytest.raises(AgentCallError):
            await client.ask(url, "broken", "hi", timeout=10)
        assert agent.card_fetches == 2  # the failed calls dropped the card: read again
        await client.aclose()


async def test_an_unreachable_agent_is_named() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AgentClient()
    with pytest.raises(AgentCallError, match=f"cannot reach agent gone at http://127.0.0.1:{port}"):
        await client.ask(f"http://127.0.0.1:{port}/", "gone", "hi", timeout=5)
    await client.aclose()


async def test_a_request_the_agent_hung_up_on_is_sent_once_more_and_no_more() -> None:
    async with HostileAgent() as agent:
        client = AgentClient()
        with pytest.raises(AgentCallError, match="Server disconnected"):
            await client.ask(f"{agent.url}/hang-up", "hang-up", "hi", timeout=10, message_id="m-1")
        assert agent.hung_up == 2
        await client.aclose()
