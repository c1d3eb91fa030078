"""MCP benchmark: what a tool call costs through crewline, both ways, on SQLite in a temporary directory.

- **crewline as an MCP server**: an official-SDK client calls ``get_run`` on ``/mcp`` of a real server
  on loopback (uvicorn, as ``crewline serve`` runs it): every call authenticates its key, checks its
  scope and reads the run. Compared with ``GET /api/v1/runs/{id}`` on the same server.
- **an MCP server as a connector**: a workflow calls a read-only tool of an in-process SDK ``MCPServer``
  N times, each call a durable step; compared with the same calls made directly with the SDK client.

Latencies are per call (p50 / p95), printed with the machine and the command; nothing is asserted.

    python bench/mcp_calls.py                 # 300 calls each
    python bench/mcp_calls.py --calls 1000
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from crewline import App, Context, Settings
from crewline.connectors.base import ConnectorSetup
from crewline.connectors.mcp_client import McpConnector, McpSettings
from crewline.secret_store import Credentials
from crewline.server import ServerConfig, create_app
from crewline.server.keys import create_key


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(min(20, n)):  # warm-up
        await call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def line(name: str, ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20)[-1]
    return f"{name:<44} p50 {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   {1000 / statistics.mean(ms):8.0f}/s"


def serve(app: App) -> tuple[uvicorn.Server, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    api = create_app(app, config=ServerConfig.from_settings(app.settings), workers=2)
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def server_side(tmp: Path, calls: int) -> list[str]:
    app = App(settings=Settings(database_url=f"sqlite:///{tmp}/server.db", project_dir=tmp))

    @app.workflow()
    async def nothing(ctx: Context) -> str:
        return "done"

    _, token = app.db.run(lambda conn: create_key(conn, scope="operator"))
    server, url = serve(app)
    run_id = await app.start("nothing")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            httpx2.AsyncClient(headers=auth) as http,
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
        ):
            mcp_ms = await timed(calls, lambda: client.call_tool("get_run", {"run_id": run_id}))
        async with httpx.AsyncClient(base_url=url, headers=auth) as rest:
            rest_ms = await timed(calls, lambda: rest.get(f"/api/v1/runs/{run_id}"))
    finally:
        server.should_exit = True
    return [line("MCP tools/call get_run over /mcp", mcp_ms), line("REST GET /api/v1/runs/{id}", rest_ms)]


def tool_server() -> MCPServer:
    server = MCPServer("bench")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        return a + b

    return server


async def connector_side(tmp: Path, calls: int) -> list[str]:
    app = App(settings=Settings(database_url=f"sqlite:///{tmp}/connector.db", project_dir=tmp))
    settings = McpSettings.model_validate({"type": "mcp", "url": "http://in-process.invalid/mcp"})
    setup = ConnectorSetup("bench", settings, Credentials(None, None, {}))
    app.engine.connectors.add(McpConnector(setup, server=tool_server()))
    per_call: list[float] = []

    @app.workflow()
    async def adds(ctx: Context, n: int) -> int:
        tools = await ctx.connector("bench").load()
        for i in range(n):
            start = time.perf_counter()
            await tools.call("add", a=i, b=1)
            per_call.append((time.perf_counter() - start) * 1000)
        return n

    worker = asyncio.create_task(app.worker(concurrency=1).run())
    await app.result(await app.start("adds", calls), timeout=600)
    worker.cancel()
    direct_server = tool_server()
    async with Client(direct_server) as client:
        direct = await timed(calls, lambda: client.call_tool("add", {"a": 1, "b": 1}))
    await app.aclose()
    return [
        line("connector call as a durable step (in process)", per_call),
        line("SDK client call (in process)", direct),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(f"# {platform.platform()}, Python {platform.python_version()}, {' '.join(sys.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        for text in [*await server_side(Path(tmp), args.calls), *await connector_side(Path(tmp), args.calls)]:
            print(text)


if __name__ == "__main__":
    asyncio.run(main())
