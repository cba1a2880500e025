"""A small MCP server for the mcp-tools example, built with the official ``mcp`` SDK.

Run it beside `kagent dev` (the agent's Tool points at http://127.0.0.1:8765/mcp):

    python examples/mcp-tools/inventory_server.py --port 8765

In a cluster, run any MCP server behind a Service and point the Tool's ``mcp.url`` at it.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

STOCK = {"SKU-42": 17, "SKU-7": 0, "SKU-100": 250}
WAREHOUSES = ["Berlin", "Lisbon", "Seoul"]


def make_server() -> MCPServer:
    server = MCPServer("inventory")

    @server.tool()
    def check_stock(sku: str) -> str:
        """How many units of a product (by SKU, e.g. SKU-42) are in stock."""
        if sku not in STOCK:
            return f"unknown SKU {sku}"
        return f"{STOCK[sku]} units of {sku} in stock"

    @server.tool()
    def list_warehouses() -> list[str]:
        """The warehouses that ship orders."""
        return WAREHOUSES

    @server.tool()
    def clear_inventory() -> str:
        """Deletes every stock record. The Tool resource does not offer this one to the agent."""
        STOCK.clear()
        return "inventory cleared"

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(make_server().streamable_http_app(), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
