"""The proxy routes without FastAPI's routing and middleware stack.

Proxy traffic is the server's hot path: every model call an operator's tools make passes through it. Its
endpoints take a bare :class:`Request`, read and limit their own body, and answer every error in their
protocol's shape (:func:`._common.guarded`), so FastAPI's dependency solving, route matching over every
API route and the middleware stack (the error, telemetry and body limit layers Starlette and FastAPI put
around every application, the server's own body limit, the exception middleware) add nothing to them but
time. :class:`FastPathAPI` builds its stack with :class:`ProxyFastPath` in front of all of it, which hands
these exact method and path pairs straight to their endpoint; every other request (and the lifespan,
anything not HTTP) goes through the whole stack unchanged. ``FastAPI.__call__`` still runs first, so
FastAPI's own telemetry (spans and metrics, when OpenTelemetry is configured) sees proxy requests too.
The routes stay registered on the application as well, so they behave the same if reached without this
(e.g. mounted elsewhere).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..outage import DatabaseWaits
from . import anthropic_api, openai_api

__all__ = ["FastPathAPI", "ProxyFastPath"]

_ROUTES: dict[tuple[str, str], Callable[[Request], Awaitable[Any]]] = {
    ("POST", "/v1/chat/completions"): openai_api.chat_completions,
    ("POST", "/v1/embeddings"): openai_api.embeddings,
    ("GET", "/v1/models"): openai_api.models,
    ("POST", "/v1/messages"): anthropic_api.messages,
}


class ProxyFastPath:
    """ASGI app in front of the middleware stack: proxy requests go straight to their endpoint; ``app`` is
    the stack. Starlette has already set ``scope["app"]`` (what ``request.app`` is) to the application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = _ROUTES.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class FastPathAPI(FastAPI):
    """FastAPI whose middleware stack is wrapped in :class:`ProxyFastPath`, and both in
    :class:`~crewline.server.outage.DatabaseWaits` (``database_wait`` seconds).

    ``add_middleware`` can only place middleware inside Starlette's outermost error middleware and
    FastAPI's own layers; building the stack is the one hook outside all of them and still inside
    ``FastAPI.__call__``."""

    def __init__(self, *, database_wait: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database_wait = database_wait

    def build_middleware_stack(self) -> ASGIApp:
        return DatabaseWaits(ProxyFastPath(super().build_middleware_stack()), self.database_wait)
