"""``/events``: the server-sent events the console's pages subscribe to (with htmx-ext-sse).

Event names are those of :class:`.live.Broadcast`; a listener receives only what its key may read. A
stream ends after :data:`STREAM_LIFE` seconds and the browser reconnects, which checks the session again
and keeps a shutting-down server from waiting on open streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from .live import Broadcast, Notice
from .web import Viewer, console_of, viewer

__all__ = ["STREAM_LIFE", "router"]

STREAM_LIFE = 60.0
_KEEP_ALIVE = 15.0

router = APIRouter(include_in_schema=False)


@router.get("/events")
async def events(request: Request, who: Viewer = Depends(viewer)) -> StreamingResponse:
    broadcast = console_of(request).broadcast
    queue = broadcast.subscribe()
    return StreamingResponse(
        _stream(request, who, queue, broadcast),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, who: Viewer, queue: asyncio.Queue[Notice], broadcast: Broadcast
) -> AsyncIterator[str]:
    ends = time.monotonic() + STREAM_LIFE
    try:
        yield "retry: 1000\n: connected\n\n"
        while (left := ends - time.monotonic()) > 0 and not await request.is_disconnected():
            try:
                notice = await asyncio.wait_for(queue.get(), min(_KEEP_ALIVE, left))
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if who.may(notice.action):
                yield f"event: {notice.event}\ndata: {notice.data}\n\n"
    finally:
        broadcast.unsubscribe(queue)
