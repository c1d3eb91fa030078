"""The proxy routes without FastAPI's routing and middleware stack.

Proxy traffic is the server's hot path: every model call an operator's tools make passes through it. Its
endpoints take a bare :class:`Request`, read and limit their own body, and answer every error in their
protocol's shape (:func:`._common.guarded`), so FastAPI's dependency solving, route matching over every
API route, exception middleware and body limit add nothing to them but time. :class:`ProxyFastPath` sits
outermost and hands these exact method and path pairs straight to their endpoint; every other request
(and anything not HTTP) goes through the full application unchanged. The routes stay registered on the
application too, so they behave the same if reached without this (e.g. mounted elsewhere).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from . import anthropic_api, openai_api

__all__ = ["ProxyFastPath"]

_ROUTES: dict[tuple[str, str], Callable[[Request], Awaitable[Any]]] = {
    ("POST", "/v1/chat/completions"): openai_api.chat_completions,
    ("POST", "/v1/embeddings"): openai_api.embeddings,
    ("GET", "/v1/models"): openai_api.models,
    ("POST", "/v1/messages"): anthropic_api.messages,
}


class ProxyFastPath:
    """ASGI middleware: proxy requests go straight to their endpoint; ``app`` is the full application."""

    def __init__(self, app: ASGIApp, root: Any) -> None:
        self.app = app
        self.root = root  # what ``request.app`` must be (the FastAPI instance, holding the server state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = _ROUTES.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self.root
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
