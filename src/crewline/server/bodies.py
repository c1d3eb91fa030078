"""JSON request bodies read with crewline's nesting limit, so no body is too deep to get a clear answer.

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

from ..errors import InvalidInput
from ..store.payloads import parse_json

__all__ = ["JsonBodyRoute"]


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
