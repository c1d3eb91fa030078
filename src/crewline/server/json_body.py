"""Bodies sent to the JSON API are read as JSON whatever content type the client guessed.

``curl -d '{...}'`` labels its body ``application/x-www-form-urlencoded`` unless told otherwise, and
FastAPI would then refuse a perfectly good JSON body with a 422 that does not say why. The API takes
nothing but JSON, so a missing, form or plain-text content type is taken to mean JSON; a body that is not
JSON still gets the 400 that says so. Other content types (multipart, say) are left to fail as they are.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AssumeJson"]

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
