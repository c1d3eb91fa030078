"""``/api/v1/stats``: the report of ``crewline stats`` (model calls, runs, reviews, memory retrieval)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ...observe.reports import BY, DEFAULT_SINCE, parse_query, prepare, stats
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["spend"], route_class=JsonBodyRoute)


@router.get(
    "/stats",
    response_model=dict[str, Any],
    summary="What the AI did: calls, cost, latency, errors, runs, reviews, retrieval",
)
async def get_stats(
    request: Request,
    since: Annotated[
        str, Query(max_length=40, description="How far back: a number with m, h, d or w (30m, 24h, 7d).")
    ] = DEFAULT_SINCE,
    by: Annotated[
        str | None, Query(max_length=40, description=f"Group the calls by {', '.join(BY)}.")
    ] = None,
    _: ApiKey = Depends(require("read spend")),
) -> dict[str, Any]:
    query = parse_query(since, by)
    db = state_of(request).app.db
    await asyncio.to_thread(prepare, db, query)
    return await db.read(lambda conn: stats(conn, query))
