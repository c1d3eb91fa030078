"""An MCP server built with the official SDK, for the MCP connector's tests: in process, over HTTP on
loopback (``http_app``), or over stdio (``python -m tests.connectors._mcp_server``). ``CREATED`` and
``KEYS`` are its "remote side": what it was asked to do and the idempotency keys it saw."""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.types import ASGIApp, Receive, Scope, Send

from crewline.connectors.mcp_client import IDEMPOTENCY_META

CREATED: list[str] = []
KEYS: list[str | None] = []


def build() -> MCPServer:
    server = MCPServer("test-tools")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def create_ticket(title: str, ctx: Context) -> dict[str, Any]:
        """Open a ticket."""
        CREATED.append(title)
        KEYS.append((ctx.request_context.meta or {}).get(IDEMPOTENCY_META))
        return {"id": f"T-{len(CREATED)}", "title": title}

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
    def set_flag(name: str, on: bool) -> str:
        """Set a flag."""
        return f"{name}={'on' if on else 'off'}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def hang() -> str:
        """Never answers."""
        await anyio.sleep(3600)
        return "late"

    @server.tool()
    def drop_everything() -> str:
        """Not on any allow-list."""
        CREATED.append("dropped")
        return "gone"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ToolError(reason)

    return server


def http_app(token: str) -> ASGIApp:
    """The server over streamable HTTP (stateless), refusing requests without ``Bearer <token>``."""
    inner = build().streamable_http_app(stateless_http=True, json_response=True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no"})
                return
        await inner(scope, receive, send)

    return app


if __name__ == "__main__":
    build().run("stdio")
