"""The operator console: server-rendered pages at ``/`` of `crewline serve`, for a laptop or a phone.

Jinja2 templates (``templates/``) render every page on the server; htmx swaps fragments and listens to
``/events`` for live updates; charts are drawn with uPlot. The scripts are vendored in ``static/vendor``
(see its VENDORED.md), so the console works offline and needs no build step. Operators sign in with an
API key of scope admin, operator or reviewer; every page and action asks the same permission map as the
API (:data:`crewline.server.keys.ACTIONS`). Data comes from the modules that own it, never from SQL here.
"""

from __future__ import annotations

from fastapi import FastAPI

from ..server.state import ServerState
from .assets import Assets
from .config import ConsoleConfig
from .events import router as events_router
from .live import Broadcast
from .pages import page_modules
from .web import ConsoleState, PageError, SignIn, error_page, sign_in_redirect

__all__ = ["ConsoleConfig", "install_console"]


def install_console(api: FastAPI, server: ServerState) -> None:
    """Serve the console from ``api`` at ``/``, its static files at ``/static`` and its events at ``/events``."""
    app = server.app
    assets = Assets()
    broadcast = Broadcast(app, poll_every=max(app.settings.poll_interval, 1.0))
    app.observers.add(broadcast)
    console = ConsoleState(server, ConsoleConfig.from_settings(app.settings), assets, broadcast)
    api.state.console = console
    api.add_exception_handler(SignIn, sign_in_redirect)  # type: ignore[arg-type]
    api.add_exception_handler(PageError, error_page)  # type: ignore[arg-type]
    api.include_router(assets.router())
    api.include_router(events_router)
    for module in page_modules():
        console.nav.extend(module.NAV)
        api.include_router(module.router)
    console.nav.sort(key=lambda entry: entry.order)
