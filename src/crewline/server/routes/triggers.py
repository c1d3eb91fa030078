"""``/api/v1/triggers``: each inbox trigger's health, as ``crewline triggers list`` shows it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ...workers.inbox import health_report
from ...workers.inbox_state import list_states
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["triggers"], route_class=JsonBodyRoute)


@router.get(
    "/triggers",
    response_model=list[dict[str, Any]],
    summary="Inbox triggers: mailbox, workflow, status, last poll and success, the last error, messages seen",
)
async def list_triggers(
    request: Request, _: ApiKey = Depends(require("read triggers"))
) -> list[dict[str, Any]]:
    app = state_of(request).app
    states = await app.db.read(list_states)
    return health_report(app.settings.sections.get("triggers"), states)
