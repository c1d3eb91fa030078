"""Serving while the database is down: every request waits at most ``[server] database_wait`` for it,
then answers 503 with ``Retry-After`` (in the API's error shape, or the proxy protocol's) instead of
hanging or failing with a 500.

The bound is set per request (:func:`crewline.store.database.bounded_waits`), so the workers sharing this
process's database keep waiting the outage out and carry on where they were when it returns. The outage
itself is logged once by the database, not once per refused request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..store.database import bounded_waits

__all__ = ["RETRY_AFTER", "DatabaseWaits", "unavailable_headers", "unavailable_message"]

# What a refused client is told to wait: about as long as a database restart takes.
RETRY_AFTER = 5


class DatabaseWaits:
    """ASGI wrapper bounding how long each HTTP request may wait for an unreachable database."""

    def __init__(self, app: ASGIApp, wait: float) -> None:
        self.app = app
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with bounded_waits(self.wait):
            await self.app(scope, receive, send)


def unavailable_message(database: str = "the database") -> str:
    """What a refused client reads (no URL: the log names the database, the answer only says what to do)."""
    return (
        f"{database} is unreachable right now, so this request was not carried out; "
        f"retry after {RETRY_AFTER} seconds (runs accepted earlier are kept and resume when it returns)"
    )


def unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER)}
