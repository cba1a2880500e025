"""A Tool of type mcp: the controller lists the server's tools (official mcp SDK on both sides)
into status.discoveredTools, filtered by toolNames, with a header Secret read from the API."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kagent.local.services import AsgiServer
from tests.integration.test_controller_agents import condition, get, wait_for
from tests.integration.test_tools_mcp import HeaderRecorder, make_server

pytestmark = pytest.mark.integration


def test_mcp_tools_are_discovered_into_status(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    app = HeaderRecorder(make_server().streamable_http_app())
    with AsgiServer(app, lifespan="on") as server:
        cp.kubectl("create", "secret", "generic", "mcp-auth", "-n", namespace,
                   "--from-literal=token=Bearer t0ken")
        tool = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
                "metadata": {"name": "calc", "namespace": namespace},
                "spec": {"type": "mcp", "mcp": {
                    "url": server.url + "/mcp", "toolNames": ["add", "whoami"],
                    "headersFrom": [{"name": "Authorization",
                                     "secretKeyRef": {"name": "mcp-auth", "key": "token"}}]}}}
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(tool))
        status = wait_for(lambda: (get(cp, "tool", "calc", namespace) or {}).get("status", {}).get("discoveredTools"),
                          what="discovered tools")
        assert sorted(t["name"] for t in status) == ["add", "whoami"]
        assert next(t for t in status if t["name"] == "add")["description"] == "Add two integers."
        assert condition(get(cp, "tool", "calc", namespace), "Accepted")["status"] == "True"
        assert any(h.get("authorization") == "Bearer t0ken" for h in app.seen)
        # A listed tool the server does not offer is reported by name.
        tool["spec"]["mcp"]["toolNames"] = ["add", "multiply"]
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(tool))
        refused = wait_for(lambda: (c := condition(get(cp, "tool", "calc", namespace), "Accepted"))
                           .get("reason") == "McpToolNotFound" and c, what="McpToolNotFound")
        assert "multiply" in refused["message"]
