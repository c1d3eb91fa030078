"""``/``: the overview, the first page after sign-in.

A key that may not read runs (a reviewer) is sent to the first page its scope may open instead.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ...flows.run_store import run_counts
from ..web import PAGE_HEADERS, NavEntry, console_of, render, viewer

__all__ = ["NAV", "router"]

NAV = (NavEntry(10, "Overview", "/", "read runs"),)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def overview(request: Request) -> Response:
    who = await viewer(request)
    console = console_of(request)
    if not who.may("read runs"):
        for entry in console.nav:
            if who.may(entry.action):
                return RedirectResponse(entry.path, status_code=303, headers=PAGE_HEADERS)
        return render(request, "nothing.html", who=who)
    day = time.time() - 86400
    counts = await console.server.app.db.read(lambda conn: run_counts(conn, day))
    return render(request, "overview.html", {"counts": counts}, who=who)
