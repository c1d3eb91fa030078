"""``crewline worker``: execute runs until told to stop."""

from __future__ import annotations

import asyncio
import os
import signal

import click

from ..app import App
from ._common import (
    LoopFactory,
    app_option,
    configure_logging,
    database_label,
    errors_as_exit,
    fail,
    load_app,
    loop_option,
    run_async,
)
from .config import require_valid_project

__all__ = ["worker"]


@click.command()
@app_option
@click.option(
    "--concurrency",
    "-c",
    default=8,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Runs executed at once by this worker.",
)
@click.option("--id", "worker_id", default=None, help="Worker id (default: host-pid-random).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (see the README's Observability).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port to listen on."
)
@loop_option
def worker(
    app_ref: str | None,
    concurrency: int,
    worker_id: str | None,
    metrics_port: int | None,
    metrics_host: str,
    loop_factory: LoopFactory | None,
) -> None:
    """Claim and execute runs; SIGTERM or Ctrl-C finish the current steps, release the runs and exit."""
    configure_logging()
    require_valid_project()
    app = load_app(app_ref)
    if not app.workflows:
        click.echo(
            "crewline: warning: the app registers no workflows; this worker has nothing to run", err=True
        )
    if metrics_port is not None:
        _serve_metrics(app, metrics_host, metrics_port)
    loop = "asyncio" if loop_factory is None else "uvloop"
    run_async(_serve(app, concurrency, worker_id, loop), loop_factory)


async def _serve(app: App, concurrency: int, worker_id: str | None, loop_name: str) -> None:
    w = app.worker(concurrency=concurrency, worker_id=worker_id)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.stop)
    click.echo(
        f"worker {w.id}: {len(app.workflows)} workflows, concurrency {concurrency}, "
        f"database {database_label(app.settings.database_url)}, event loop {loop_name}",
        err=True,
    )
    try:
        await w.run()
    finally:
        await app.aclose()
    click.echo(f"worker {w.id} stopped", err=True)


def _serve_metrics(app: App, host: str, port: int) -> None:
    """Expose the worker's metrics on their own small HTTP server (a thread), with the token if one is set."""
    from ..observe.metrics import metrics_token, serve_metrics

    with errors_as_exit():
        token = metrics_token(app.settings.sections.get("observe"), os.environ)
    try:
        serve_metrics(app.metrics, host, port, token)
    except OSError as e:
        fail(f"--metrics-port: cannot listen on {host}:{port}: {e.strerror or e}", 1)
    click.echo(f"metrics: http://{host}:{port}/metrics", err=True)
