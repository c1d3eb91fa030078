"""``GET /metrics``: the app's Prometheus metrics (see :mod:`crewline.observe.metrics`).

Open like ``/healthz`` unless ``[observe] metrics_token_env`` names a variable holding a token, which
scrapers then send as ``Authorization: Bearer <token>``. The gauges are read from the database off the
event loop; a database that cannot be reached answers 503, so the scrape shows as failed, not as zeros.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import DatabaseUnavailable
from ...observe.metrics import CONTENT_TYPE
from ..errors import ApiError
from ..state import state_of

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics: model calls, cost, steps, runs, queues, reviews, budgets",
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format."},
        401: {"description": "[observe] metrics_token_env is set and the bearer token is missing or wrong."},
        503: {"description": "The database cannot be reached to read the gauges."},
    },
)
async def metrics(request: Request) -> Response:
    state = state_of(request)
    token = state.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(
                401,
                "unauthorized",
                "GET /metrics needs the token named by [observe] metrics_token_env: "
                "send Authorization: Bearer <token>",
            )
    try:
        body = await asyncio.to_thread(state.app.metrics.render)
    except DatabaseUnavailable as e:
        raise ApiError(503, "database_unavailable", f"cannot read the metrics: {e}") from None
    return Response(body, media_type=CONTENT_TYPE)
