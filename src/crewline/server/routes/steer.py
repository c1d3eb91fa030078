"""Pausing and resuming runs, workflows and queues; disabling workflows; flags (``/api/v1/flags``).

Each route is a thin front on :class:`~crewline.flows.steering.Steering`, as the CLI's commands are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from ...flows.run_store import PauseResult
from ...flows.steering import SwitchResult
from ...flows.switches import Flag
from ..auth import check_reach, require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of
from ._body import RequestBody
from .runs import RunId

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["steer"], route_class=JsonBodyRoute)

_NAME = r"^[^\x00-\x1f\x7f/]{1,200}$"
Name = Annotated[str, Path(pattern=_NAME, description="The workflow's or queue's name.")]
FlagName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$", description="The flag's name.")
]
_FINISHED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The run has finished, or is not paused (resume)."}
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {422: {"description": "No workflow or queue of that name."}}


class Paused(BaseModel):
    run_id: str
    result: PauseResult


class Switched(BaseModel):
    scope: Literal["workflow", "queue"]
    name: str
    action: str
    changed: bool = Field(description="False when it was already so.")
    runs: int = Field(description="How many runs this paused (or asked to pause) or resumed.")
    runs_were: Literal["paused", "resumed"]

    @classmethod
    def of(cls, result: SwitchResult) -> Switched:
        return cls(**result.to_json())


class Disable(RequestBody):
    pause_running: bool = Field(
        default=False, description="Pause its unfinished runs too (default: they finish)."
    )


class FlagOut(BaseModel):
    name: str
    value: Any
    updated_at: float

    @classmethod
    def of(cls, flag: Flag) -> FlagOut:
        return cls(**flag.to_json())


class SetFlag(RequestBody):
    value: Any = Field(description="Any JSON value; workflows read it with ctx.flag(name, default=...).")


@router.post("/runs/{run_id}/pause", response_model=Paused, summary="Pause a run", responses=_FINISHED)
async def pause_run(run_id: RunId, request: Request, key: ApiKey = Depends(require("pause runs"))) -> Paused:
    app = state_of(request).app
    check_reach(key, "pause runs", await app.get_run(run_id))
    return Paused(run_id=run_id, result=await app.steering.pause(run_id))


@router.post(
    "/runs/{run_id}/resume", response_model=Paused, summary="Resume a paused run", responses=_FINISHED
)
async def resume_run(run_id: RunId, request: Request, key: ApiKey = Depends(require("pause runs"))) -> Paused:
    app = state_of(request).app
    check_reach(key, "pause runs", await app.get_run(run_id))
    return Paused(run_id=run_id, result=await app.steering.resume(run_id))


_SWITCH = require("switch workflows and queues")


@router.post(
    "/workflows/{name}/pause", response_model=Switched, summary="Pause a workflow's runs", responses=_UNKNOWN
)
async def pause_workflow(name: Name, request: Request, _: ApiKey = Depends(_SWITCH)) -> Switched:
    return Switched.of(await state_of(request).app.steering.pause_all("workflow", name))


@router.post(
    "/workflows/{name}/resume",
    response_model=Switched,
    summary="Resume a workflow's runs",
    responses=_UNKNOWN,
)
async def resume_workflow(name: Name, request: Request, _: ApiKey = Depends(_SWITCH)) -> Switched:
    return Switched.of(await state_of(request).app.steering.resume_all("workflow", name))


@router.post(
    "/workflows/{name}/disable",
    response_model=Switched,
    summary="Start no runs of a workflow",
    responses=_UNKNOWN,
)
async def disable_workflow(
    name: Name, request: Request, body: Disable | None = None, _: ApiKey = Depends(_SWITCH)
) -> Switched:
    pause = body is not None and body.pause_running
    return Switched.of(await state_of(request).app.steering.disable(name, pause_running=pause))


@router.post(
    "/workflows/{name}/enable",
    response_model=Switched,
    summary="Let a workflow start runs again",
    responses=_UNKNOWN,
)
async def enable_workflow(name: Name, request: Request, _: ApiKey = Depends(_SWITCH)) -> Switched:
    return Switched.of(await state_of(request).app.steering.enable(name))


@router.post(
    "/queues/{name}/pause", response_model=Switched, summary="Pause a queue's runs", responses=_UNKNOWN
)
async def pause_queue(name: Name, request: Request, _: ApiKey = Depends(_SWITCH)) -> Switched:
    return Switched.of(await state_of(request).app.steering.pause_all("queue", name))


@router.post(
    "/queues/{name}/resume", response_model=Switched, summary="Resume a queue's runs", responses=_UNKNOWN
)
async def resume_queue(name: Name, request: Request, _: ApiKey = Depends(_SWITCH)) -> Switched:
    return Switched.of(await state_of(request).app.steering.resume_all("queue", name))


@router.get("/flags", response_model=list[FlagOut], summary="Every flag that is set")
async def list_flags(request: Request, _: ApiKey = Depends(require("read flags"))) -> list[FlagOut]:
    return [FlagOut.of(f) for f in await state_of(request).app.steering.flags()]


@router.get(
    "/flags/{name}",
    response_model=FlagOut,
    summary="A flag's value",
    responses={422: {"description": "Not set."}},
)
async def get_flag(name: FlagName, request: Request, _: ApiKey = Depends(require("read flags"))) -> FlagOut:
    return FlagOut.of(await state_of(request).app.steering.flag(name))


@router.put("/flags/{name}", response_model=FlagOut, summary="Set a flag")
async def set_flag(
    name: FlagName, body: SetFlag, request: Request, _: ApiKey = Depends(require("set flags"))
) -> FlagOut:
    return FlagOut.of(await state_of(request).app.steering.set_flag(name, body.value))


@router.delete(
    "/flags/{name}", status_code=204, summary="Remove a flag", responses={422: {"description": "Not set."}}
)
async def unset_flag(name: FlagName, request: Request, _: ApiKey = Depends(require("set flags"))) -> Response:
    await state_of(request).app.steering.unset_flag(name)
    return Response(status_code=204)
