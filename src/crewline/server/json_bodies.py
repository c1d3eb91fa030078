"""JSON request bodies of the REST API: read as JSON whatever content type the client guessed, and with
crewline's nesting limit, so every body gets a clear answer.

``curl -d '{...}'`` labels its body ``application/x-www-form-urlencoded`` unless told otherwise, and
FastAPI would then refuse a perfectly good JSON body with a 422 that does not say why. The API takes
nothing but JSON, so a missing, form or plain-text content type is taken to mean JSON (:class:`AssumeJson`);
a body that is not JSON still gets the 400 that says so. Other content types (multipart, say) are left to
fail as they are.

FastAPI parses bodies with :func:`json.loads`, which gives up on documents nested deeper than Python's
recursion limit with an error FastAPI can only report as "There was an error parsing the body". Routes
of a router built with :class:`JsonBodyRoute` answer those with a 422 naming the limit instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InvalidInput
from ..store.payloads import parse_json

__all__ = ["AssumeJson", "JsonBodyRoute"]

_GUESSES = (b"application/x-www-form-urlencoded", b"text/plain")
_WITH_BODY = ("POST", "PUT", "PATCH")


class AssumeJson:
    """Rewrite the content type of bodies sent under ``prefix`` to ``application/json`` (see module doc)."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in _WITH_BODY
            and str(scope["path"]).startswith(self.prefix)
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            given = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if not given.strip() or given.split(b";")[0].strip().lower() in _GUESSES:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except RecursionError:
                try:
                    self._json = parse_json(body)
                except InvalidInput as e:
                    raise HTTPException(422, str(e)) from None
        return self._json


class JsonBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route
