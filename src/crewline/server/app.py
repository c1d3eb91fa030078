"""The ASGI application: routers, error handlers, body limit, and the lifespan that runs workers.

On startup the database is opened (and migrated); unless ``workers=0`` an in-process
:class:`~crewline.workers.Worker` executes runs and fires cron ticks, and completion callbacks are sent.
On shutdown (uvicorn stops on SIGTERM/SIGINT after finishing in-flight requests) the worker drains:
running steps finish, runs are parked and released for others, then the database is closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.routing import Route

from ..app import App
from ..console import install_console
from ..observe.metrics import metrics_token
from ..store.database import bounded_waits
from . import proxy
from .auth import Authenticator
from .body_limit import BodyLimit
from .callbacks import CallbackSender
from .config import ServerConfig
from .docs import install_docs
from .errors import ERROR_RESPONSES, install_handlers
from .json_bodies import AssumeJson
from .mcp import McpEndpoint
from .proxy.fastpath import FastPathAPI
from .routes import (
    evals,
    health,
    hooks,
    keys,
    metrics,
    prompts,
    reviews,
    runs,
    slack,
    spend,
    stats,
    steer,
    triggers,
)
from .state import ServerState

__all__ = ["create_app"]

log = logging.getLogger("crewline.server")


def _version() -> str:
    try:
        return version("crewline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


async def _warm_models(app: App) -> None:
    """With models configured, get the gateway ready before the first proxy call instead of during it."""
    if "models" not in app.settings.sections:
        return
    try:
        with bounded_waits(5.0):  # a database that went away is the first call's to report, not start-up's
            await app.models.warm()
    except Exception as e:  # the first call reports it properly; starting up must not fail on it
        log.warning("could not get the model gateway ready at start: %s", e)


def create_app(app: App, *, config: ServerConfig | None = None, workers: int = 8) -> FastAPI:
    """The server for ``app``; ``workers`` runs executed at once in this process (0: API only)."""
    config = config or ServerConfig.from_settings(app.settings)
    _check_hooks(app, config)
    _quiet_http_client()
    token = metrics_token(app.settings.sections.get("observe"), os.environ)
    state = ServerState(
        app=app, config=config, auth=Authenticator(app, config.key_cache), metrics_token=token
    )
    _ = app.metrics  # observed from the start, not from the first scrape
    mcp = McpEndpoint(app, state.auth, config.mcp, config.public_url)

    lifespan = functools.partial(_lifespan, state=state, mcp=mcp, workers=workers)

    # FastPathAPI: proxy calls skip routing and the whole middleware stack (see proxy/fastpath.py).
    api = FastPathAPI(
        title="crewline",
        version=_version(),
        description="Start, follow and steer durable workflow runs; receive signed webhooks.",
        lifespan=lifespan,
        database_wait=config.database_wait,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    api.state.crewline = state
    install_handlers(api)
    install_docs(api)
    _include_routers(api)
    # An ASGI endpoint for MCP clients, outside the REST API's schema: see server/mcp.py.
    api.router.routes.append(Route("/mcp", endpoint=mcp, include_in_schema=False))
    install_console(api, state)
    # Webhooks and the proxy enforce their own limits, answering in their own error shapes.
    api.add_middleware(BodyLimit, limit=config.max_body, skip=("/hooks/", "/v1/"))
    api.add_middleware(AssumeJson, prefix="/api/")
    return api


@asynccontextmanager
async def _lifespan(_: FastAPI, *, state: ServerState, mcp: McpEndpoint, workers: int) -> AsyncIterator[None]:
    """The server's background work: its worker, outgoing callbacks and the MCP endpoint's sessions."""
    app = state.app
    tasks: list[asyncio.Task[None]] = []
    worker = app.worker(concurrency=workers) if workers > 0 else None
    if worker is not None:
        state.worker = asyncio.create_task(worker.run(), name="crewline-server-worker")
        tasks.append(state.worker)
    await _warm_models(app)
    sender = CallbackSender(app, state.config.hooks)
    tasks.append(asyncio.create_task(sender.run(), name="crewline-callbacks"))
    try:
        async with mcp.running():
            yield
    finally:
        if worker is not None:
            worker.stop()
        sender.stop()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("background task failed", exc_info=result)
        await app.aclose()


def _include_routers(api: FastAPI) -> None:
    for module in (
        health,
        metrics,
        runs,
        steer,
        reviews,
        spend,
        stats,
        triggers,
        evals,
        prompts,
        keys,
        hooks,
        slack,
        proxy,
    ):
        # Health answers in its own shapes and the proxy in its protocols'; the rest share one error body.
        shared = module not in (health, metrics, proxy)
        api.include_router(module.router, responses=ERROR_RESPONSES if shared else None)


def _quiet_http_client() -> None:
    """httpx logs every request it sends at INFO: one line per proxied model call, written synchronously
    on the event loop, repeating what the call record holds. Kept at WARNING unless configured."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _check_hooks(app: App, config: ServerConfig) -> None:
    from ..errors import ConfigError

    for hook in config.hooks.values():
        if hook.workflow not in app.workflows:
            known = ", ".join(sorted(app.workflows)) or "none registered"
            raise ConfigError(
                f"[webhooks.{hook.name}] names workflow {hook.workflow!r}, which the app does not have ({known})"
            )
