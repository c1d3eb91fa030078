"""``/api/v1/spend``, ``/calls`` and ``/budgets``: what the models cost, call by call and in total."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from ...models import reports
from ...models.call_log import call_rows
from ...models.config import ModelsConfig
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["spend"], route_class=JsonBodyRoute)

_TEXT = r"^[^\x00-\x1f\x7f/]{1,200}$"
Group = Literal["day", "model", "workflow"]


class Spend(BaseModel):
    since: float
    day: list[dict[str, Any]] | None = None
    model: list[dict[str, Any]] | None = None
    workflow: list[dict[str, Any]] | None = None


class Budget(BaseModel):
    scope: str
    limit: float | None
    spent: float
    reserved: float


@router.get("/spend", response_model=Spend, summary="Model spend by day, model and workflow")
async def get_spend(
    request: Request,
    days: Annotated[int, Query(ge=1, le=366)] = 7,
    by: Annotated[list[Group] | None, Query()] = None,
    run_id: Annotated[str | None, Query(pattern=_TEXT)] = None,
    _: ApiKey = Depends(require("read spend")),
) -> Spend:
    since = time.time() - days * 86400
    groups = tuple(dict.fromkeys(by or ["day", "model", "workflow"]))
    data = await state_of(request).app.db.read(lambda conn: reports.spend(conn, groups, since, run_id))
    return Spend(since=since, **data)


@router.get("/calls", response_model=list[dict[str, Any]], summary="Model calls, newest first")
async def list_calls(
    request: Request,
    run_id: Annotated[str | None, Query(pattern=_TEXT)] = None,
    workflow: Annotated[str | None, Query(pattern=_TEXT)] = None,
    status: Literal["ok", "error"] | None = None,
    before_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Page back: calls older than this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    _: ApiKey = Depends(require("read spend")),
) -> list[dict[str, Any]]:
    return await state_of(request).app.db.read(
        lambda conn: call_rows(
            conn, run_id=run_id, workflow=workflow, status=status, before_id=before_id, limit=limit
        )
    )


@router.get("/budgets", response_model=list[Budget], summary="Budgets: limit, spent and reserved")
async def list_budgets(request: Request, _: ApiKey = Depends(require("read spend"))) -> list[Budget]:
    app = state_of(request).app
    config = ModelsConfig.parse(app.settings.sections.get("models")).budgets
    rows = await app.db.read(lambda conn: reports.budgets(conn, config))
    return [Budget(**r) for r in rows]
