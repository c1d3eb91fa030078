"""``crewline serve``: the HTTP server (API, webhooks) with in-process workers, on uvicorn."""

from __future__ import annotations

import asyncio
import copy
import signal
import socket
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    LoopFactory,
    app_option,
    configure_logging,
    database_label,
    errors_as_exit,
    fail,
    load_app,
    loop_option,
)
from ._guide import guide as next_steps
from .config import require_valid_project

if TYPE_CHECKING:
    from ..server import ServerConfig

__all__ = ["serve"]


@click.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port, printed at start).",
)
@click.option("--no-workers", is_flag=True, help="Serve the API only; run `crewline worker` elsewhere.")
@click.option(
    "--concurrency",
    "-c",
    default=8,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Runs executed at once by the in-process worker.",
)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds to let in-flight requests finish on shutdown.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log one line per HTTP request (client, method, path, status). Off by default.",
)
@click.option(
    "--guide", is_flag=True, help="Once listening, print what to do next: URLs, a key, runs, reviews."
)
@loop_option
def serve(
    app_ref: str | None,
    host: str,
    port: int,
    no_workers: bool,
    concurrency: int,
    graceful_timeout: int,
    access_log: bool,
    guide: bool,
    loop_factory: LoopFactory | None,
) -> None:
    """Serve the REST API and webhooks, and execute runs unless --no-workers.

    SIGTERM or Ctrl-C: stop accepting requests, finish those in flight, let running steps finish and
    release their runs, then exit. The log has one line per run state change (logger crewline.runs).
    """
    configure_logging()
    require_valid_project()
    app = load_app(app_ref)
    with errors_as_exit():
        from ..server import ServerConfig, create_app

        config = ServerConfig.from_settings(app.settings)
        api = create_app(app, config=config, workers=0 if no_workers else concurrency)
    try:
        sock = _bind(host, port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    bound = sock.getsockname()
    url_host = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    workers = "no workers" if no_workers else f"worker concurrency {concurrency}"
    loop = "asyncio" if loop_factory is None else "uvloop"
    click.echo(
        f"crewline serve: listening on http://{url_host}:{bound[1]} ({len(app.workflows)} workflows, "
        f"{workers}, database {database_label(app.settings.database_url)}, event loop {loop})",
        err=True,
    )
    if guide:
        click.echo(next_steps(app, f"http://{url_host}:{bound[1]}"), err=True)
    _run(api, config, sock, graceful_timeout, access_log, loop_factory)
    click.echo("crewline serve: stopped", err=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections: +40 ms per keep-alive reply.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from here on, before uvicorn starts accepting them
    sock.set_inheritable(True)
    return sock


def _run(
    api: Any,
    config: ServerConfig,
    sock: socket.socket,
    graceful_timeout: int,
    access_log: bool,
    loop_factory: LoopFactory | None,
) -> None:
    import uvicorn

    from ..server.connections import uvicorn_config

    # uvicorn writes its access log to stdout; keep the server's whole log on one stream (stderr).
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    options = uvicorn_config(
        api,
        config,
        lifespan="on",
        log_level="info",
        log_config=log_config,
        access_log=access_log,
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = uvicorn.Server(options)
    # uvicorn re-raises the signal that stopped it once it is done; make that a clean exit, not a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # asyncio.run takes a loop_factory only from Python 3.12; a Runner is what it does underneath.
    with errors_as_exit(), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve(sockets=[sock]))
    if not server.started:
        fail("the server did not start (see the log above)", 1)
