"""``/healthz`` (the process answers) and ``/readyz`` (the database is reachable and its schema current)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...errors import DatabaseUnavailable, MigrationError
from ...store.database import bounded_waits
from ...store.migrate import check
from ..errors import error_body
from ..outage import unavailable_headers
from ..state import state_of

__all__ = ["router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, summary="The server process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to serve: database reachable, migrations current",
    responses={503: {"description": "Not ready; the body says why."}},
)
async def readyz(request: Request) -> Health | JSONResponse:
    state = state_of(request)
    if state.worker is not None and state.worker.done():
        reason = (
            "stopped"
            if state.worker.cancelled() or state.worker.exception() is None
            else state.worker.exception()
        )
        return JSONResponse(
            error_body("worker_stopped", f"the in-process worker is not running: {reason}"), status_code=503
        )
    db = state.app.db
    try:
        with bounded_waits(1.0):  # a probe answers promptly, whatever requests may wait
            await db.read(lambda conn: check(db))
    except DatabaseUnavailable:
        message = f"the {db.dialect.title} database cannot be reached; ready again as soon as it answers"
        return JSONResponse(
            error_body("database_unavailable", message), status_code=503, headers=unavailable_headers()
        )
    except MigrationError as e:
        return JSONResponse(error_body("schema_not_current", str(e)), status_code=503)
    return Health(status="ready")
