"""``/api/v1/evals``: stored evaluations, one evaluation with its cases, and two compared (the console
shows them; ``crewline eval list | show | compare`` prints the same)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from ...evals import results
from ...evals.verdicts import compare_runs
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["evals"], route_class=JsonBodyRoute)

_ID = r"^ev_[0-9a-f]{12}$"
EvalId = Annotated[str, Path(pattern=_ID, description="An evaluation id (ev_...).")]


@router.get("/evals", response_model=list[dict[str, Any]], summary="Stored evaluations, newest first")
async def list_evals(
    request: Request,
    target: Annotated[str | None, Query(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    _: ApiKey = Depends(require("read evaluations")),
) -> list[dict[str, Any]]:
    db = state_of(request).app.db
    runs = await asyncio.to_thread(results.list_runs, db, target=target, limit=limit)
    return [r.to_json() for r in runs]


@router.get("/evals/{eval_id}", response_model=dict[str, Any], summary="One evaluation with its cases")
async def get_eval(
    request: Request, eval_id: EvalId, _: ApiKey = Depends(require("read evaluations"))
) -> dict[str, Any]:
    db = state_of(request).app.db
    run = await asyncio.to_thread(results.get_run, db, eval_id)
    cases = await asyncio.to_thread(results.case_results, db, eval_id)
    return {**run.to_json(), "cases": [c.to_json() for c in cases]}


@router.get(
    "/evals/{eval_id}/compare/{other_id}",
    response_model=dict[str, Any],
    summary="Evaluation other_id against eval_id: sign test on the cases both scored",
)
async def compare_evals(
    request: Request,
    eval_id: EvalId,
    other_id: EvalId,
    _: ApiKey = Depends(require("read evaluations")),
) -> dict[str, Any]:
    db = state_of(request).app.db
    return await asyncio.to_thread(compare_runs, db, eval_id, other_id)
