"""``crewline mcp``: crewline's MCP tools over stdio, for an MCP client that launches its servers.

The client (a desktop assistant, an IDE) starts this command and speaks MCP on its standard input and
output; the log goes to standard error. The API key in ``CREWLINE_API_KEY`` authorises every tool call
by its scope, as ``Authorization: Bearer`` does on ``crewline serve``'s ``/mcp``.
"""

from __future__ import annotations

import asyncio
import os

import click

from ..app import App
from ._common import app_option, configure_logging, errors_as_exit, fail, load_app, run_async
from .config import require_valid_project

__all__ = ["mcp"]

KEY_VARIABLE = "CREWLINE_API_KEY"


@click.command()
@app_option
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Also execute up to N runs at once in this process (0: leave runs to `crewline serve` or "
    "`crewline worker`).",
)
def mcp(app_ref: str | None, workers: int) -> None:
    """Serve crewline's MCP tools on stdin/stdout: start workflows, read runs, decide reviews, search memory.

    The API key is read from the CREWLINE_API_KEY environment variable (create one with `crewline keys
    create`); its scope decides which tools succeed.
    """
    configure_logging()
    token = os.environ.get(KEY_VARIABLE, "").strip()
    if not token:
        fail(f"set {KEY_VARIABLE} to an API key (create one with `crewline keys create --scope operator`)")
    require_valid_project()
    app = load_app(app_ref)
    with errors_as_exit():
        run_async(_serve(app, token, workers))


async def _serve(app: App, token: str, workers: int) -> None:
    from mcp.server.stdio import stdio_server

    from ..server.auth import Authenticator
    from ..server.config import ServerConfig
    from ..server.errors import ApiError
    from ..server.mcp import Caller, build_server

    auth = Authenticator(app, ServerConfig.from_settings(app.settings).key_cache)
    try:
        key = await auth.authenticate(token)
    except ApiError as e:
        await app.aclose()
        fail(f"{KEY_VARIABLE}: {e.message}")
    caller = Caller(token)
    server = build_server(app, auth, lambda: caller)
    worker = app.worker(concurrency=workers) if workers else None
    running = asyncio.create_task(worker.run()) if worker is not None else None
    click.echo(f"crewline mcp: serving on stdio with API key {key.id} (scope {key.scope})", err=True)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        if worker is not None and running is not None:
            worker.stop()
            await running
        await app.aclose()
