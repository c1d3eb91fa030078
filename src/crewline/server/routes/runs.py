"""``/api/v1/runs`` and ``/api/v1/workflows``: start, list, inspect and steer runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...errors import InvalidInput
from ...flows import run_store
from ...flows.operations import parse_overrides
from ...flows.run_records import RunRecord, page_cursor, parse_cursor
from ...flows.run_store import STATES
from ...flows.step_store import StepRecord
from ..auth import check_reach, require
from ..errors import ApiError, public_error
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..starting import prepare_run, start_prepared, storable
from ..state import state_of, status_url
from ._body import RequestBody

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=JsonBodyRoute)

# Text that reaches the database: no control characters (PostgreSQL refuses NUL in text).
_ID = r"^[^\x00-\x1f\x7f]{1,200}$"
_RUN_ID = r"^[^\x00-\x1f\x7f/]{1,200}$"  # and no '/', so the id fits in one path segment
RunId = Annotated[str, Path(pattern=_RUN_ID, description="The run's id.")]
State = Literal["pending", "running", "waiting", "paused", "failed", "completed", "cancelled"]
assert set(State.__args__) == set(STATES)  # type: ignore[attr-defined]
_INT32 = 2**31 - 1


class StartRun(RequestBody):
    workflow: str = Field(
        pattern=_ID, description="Name of a registered workflow (see GET /api/v1/workflows)."
    )
    input: Any = Field(default=None, description="The workflow's input, validated against its input type.")
    run_id: str | None = Field(
        default=None, pattern=_RUN_ID, description="Use this id; starting it again is a no-op."
    )
    priority: int | None = Field(
        default=None, ge=-_INT32, le=_INT32, description="Higher runs first in its queue."
    )


class Started(BaseModel):
    run_id: str
    created: bool = Field(description="False when the id or Idempotency-Key named an existing run.")
    status_url: str


class RunOut(BaseModel):
    id: str
    workflow: str
    version: str | None
    queue: str
    priority: int
    status: State
    input: Any
    output: Any
    error: dict[str, Any] | None
    idempotency_key: str | None
    parent_id: str | None
    forked_from: str | None
    fork_step: int | None
    wait_reason: str | None
    wait_event: str | None
    wake_at: float | None
    cancel_requested: bool
    pause_requested: bool = Field(
        default=False, description="An operator asked it to pause at its next step boundary."
    )
    recoveries: int
    created_at: float
    updated_at: float
    finished_at: float | None
    pruned_at: float | None = Field(
        default=None, description="When retention dropped its payloads and steps."
    )
    attempt: int = Field(default=1, description="1, then one more each time the run is rerun from a step.")


class StepOut(BaseModel):
    step_no: int
    name: str
    kind: str
    effect: str
    status: str
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: float
    finished_at: float | None
    compensation: str | None = Field(
        default=None, description="The compensation this step registered when it finished (undone by it)."
    )


class AttemptOut(BaseModel):
    attempt: int
    from_step: int = Field(description="The step the rerun that ended this attempt started from.")
    status: State = Field(description="How this attempt ended.")
    error: dict[str, Any] | None
    finished_at: float | None
    rerun_at: float
    steps: list[StepOut] = Field(description="This attempt's steps from `from_step` on.")


class RunDetail(RunOut):
    steps: list[StepOut]
    history: list[AttemptOut] = Field(
        default_factory=list, description="Earlier attempts, oldest first, when the run was rerun."
    )


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


# A step number, a step or checkpoint name (the first of that name), or NAME#2 (the second).
StepRef = Annotated[int, Field(ge=1, le=_INT32)] | Annotated[str, Field(pattern=_ID)]


class Fork(RequestBody):
    from_step: StepRef = Field(
        description="Re-execute from this step (its number, name, checkpoint name, or name#2); earlier "
        "steps are reused."
    )
    run_id: str | None = Field(
        default=None, pattern=_RUN_ID, description="Id for the new run; 409 if a run already has it."
    )
    set: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        max_length=50,
        description='Vary the rerun, as `crewline runs fork --set` does: ["model=strong", "prompt=reply@candidate"].',
    )


class Forked(BaseModel):
    run_id: str
    forked_from: str
    status_url: str


class Rerun(RequestBody):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: StepRef = Field(
        alias="from",
        description="Execute again from this step: its number, a step or checkpoint name (the first of that "
        "name), or name#2 (the second).",
    )


class Rerunning(BaseModel):
    run_id: str
    attempt: int = Field(
        description="The new attempt's number; the earlier one is kept in the run's history."
    )
    from_step: int
    status_url: str


class Cancel(RequestBody):
    compensate: bool = Field(
        default=False,
        description="Run the compensations of its finished steps first, newest first; 422 if none has one.",
    )


class Cancelled(BaseModel):
    run_id: str
    result: Literal["cancelled", "cancel requested", "compensating", "compensation requested"]


class Undo(RequestBody):
    steps: list[Annotated[int, Field(ge=1, le=_INT32)]] = Field(
        default_factory=list,
        max_length=1000,
        description="Only these steps' compensations (default: every finished step that registered one).",
    )


class Undone(BaseModel):
    run_id: str
    result: Literal["compensating", "compensation requested"]


class Event(RequestBody):
    name: str = Field(pattern=_ID, description="What the run waits for with ctx.wait_for(name).")
    payload: Any = None


class EventSent(BaseModel):
    run_id: str
    event_id: int


class Resolve(RequestBody):
    outcome: Literal["done", "retry", "fail"]
    output: Any = Field(default=None, description="With outcome done: the step's result.")


class WorkflowOut(BaseModel):
    name: str
    queue: str
    version: str | None
    schedule: str | None
    priority: int
    input_schema: dict[str, Any] | None


@router.get("/workflows", response_model=list[WorkflowOut], summary="Registered workflows")
async def list_workflows(
    request: Request, _: ApiKey = Depends(require("list workflows"))
) -> list[WorkflowOut]:
    workflows = state_of(request).app.workflows.values()
    return [
        WorkflowOut(
            name=wf.name,
            queue=wf.queue,
            version=wf.version,
            schedule=wf.schedule,
            priority=wf.priority,
            input_schema=wf.input_adapter.json_schema() if wf.input_adapter is not None else None,
        )
        for wf in sorted(workflows, key=lambda w: w.name)
    ]


@router.post(
    "/runs",
    response_model=Started,
    status_code=201,
    summary="Start a run",
    responses={200: {"model": Started, "description": "The run already existed (same id or key)."}},
)
async def start_run(
    body: StartRun,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(pattern=_ID, description="Repeating a key returns the first run.")
    ] = None,
    key: ApiKey = Depends(require("start runs")),
) -> Started:
    prepared = prepare_run(
        state_of(request).app,
        body.workflow,
        body.input,
        run_id=body.run_id,
        idempotency_key=idempotency_key,
        priority=body.priority,
        started_by=key.id,
    )
    rid, created = await start_prepared(prepared, key)
    if not created:
        response.status_code = 200
    return Started(run_id=rid, created=created, status_url=status_url(request, rid))


@router.get("/runs", response_model=RunPage, summary="List runs, newest first")
async def list_runs(
    request: Request,
    state: State | None = None,
    workflow: Annotated[str | None, Query(pattern=_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=400, description="next_cursor of the previous page.")
    ] = None,
    key: ApiKey = Depends(require("read runs")),
) -> RunPage:
    after = _decode_cursor(cursor) if cursor else None
    mine = key.own_runs_only("read runs")
    runs = await state_of(request).app.db.read(
        lambda conn: run_store.list_runs(
            conn, state=state, workflow=workflow, started_by=mine, limit=limit + 1, after=after
        )
    )
    more = len(runs) > limit
    runs = runs[:limit]
    next_cursor = page_cursor(runs[-1]) if more and runs else None
    return RunPage(runs=[_run_out(r) for r in runs], next_cursor=next_cursor)


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        return parse_cursor(cursor)
    except InvalidInput:
        raise ApiError(
            400, "invalid_cursor", "cursor is not valid: pass next_cursor from a previous page"
        ) from None


@router.get("/runs/{run_id}", response_model=RunDetail, summary="A run with its steps")
async def show_run(run_id: RunId, request: Request, key: ApiKey = Depends(require("read runs"))) -> RunDetail:
    app = state_of(request).app
    run = await app.get_run(run_id)
    check_reach(key, "read runs", run)
    history = [
        AttemptOut(**{**a.to_json(), "error": public_error(a.error), "steps": _steps_out(a.steps)})
        for a in await app.attempts(run_id)
    ]
    shown = _steps_out(await app.steps(run_id))
    return RunDetail(**_run_out(run).model_dump(), steps=shown, history=history)


def _steps_out(steps: list[StepRecord]) -> list[StepOut]:
    return [StepOut(**{**s.to_json(), "error": public_error(s.error)}) for s in steps]


def _run_out(run: RunRecord) -> RunOut:
    return RunOut(**{**run.to_json(), "error": public_error(run.error)})


@router.post(
    "/runs/{run_id}/cancel",
    response_model=Cancelled,
    summary="Cancel a run and its children",
    responses={409: {"description": "The run has already finished."}},
)
async def cancel_run(
    run_id: RunId,
    request: Request,
    body: Cancel | None = None,
    key: ApiKey = Depends(require("cancel runs")),
) -> Cancelled:
    compensate = body is not None and body.compensate
    result = await state_of(request).app.cancel(run_id, compensate=compensate, by=key.who)
    if result not in ("cancelled", "compensating", "compensation requested"):
        result = "cancel requested"
    return Cancelled(run_id=run_id, result=result)  # type: ignore[arg-type]


@router.post(
    "/runs/{run_id}/undo",
    response_model=Undone,
    summary="Undo a run: run its steps' compensations, newest first",
    responses={
        409: {"description": "The run was already compensated."},
        422: {
            "description": "No step (or a named step without) a compensation; the message lists those with one."
        },
    },
)
async def undo_run(
    run_id: RunId, request: Request, body: Undo | None = None, key: ApiKey = Depends(require("undo runs"))
) -> Undone:
    steps = None if body is None else body.steps
    result = await state_of(request).app.undo(run_id, steps=steps, by=key.who)
    return Undone(run_id=run_id, result=result)  # type: ignore[arg-type]


@router.post(
    "/runs/{run_id}/fork",
    response_model=Forked,
    status_code=201,
    summary="Rerun from a step",
    responses={409: {"description": "The new run's id is taken."}},
)
async def fork_run(
    run_id: RunId, body: Fork, request: Request, _: ApiKey = Depends(require("fork runs"))
) -> Forked:
    overrides = parse_overrides(body.set) or None
    fork_id = await state_of(request).app.fork(
        run_id, body.from_step, new_run_id=body.run_id, overrides=overrides
    )
    return Forked(run_id=fork_id, forked_from=run_id, status_url=status_url(request, fork_id))


@router.post(
    "/runs/{run_id}/rerun",
    response_model=Rerunning,
    summary="Continue a finished run from a step, keeping the earlier attempt",
    responses={
        404: {"description": "No such run."},
        409: {"description": "The run has not finished (cancel it first)."},
        422: {"description": "No step of that number or name; the error lists the names the run has."},
    },
)
async def rerun_run(
    run_id: RunId, body: Rerun, request: Request, key: ApiKey = Depends(require("rerun runs"))
) -> Rerunning:
    app = state_of(request).app
    check_reach(key, "rerun runs", await app.get_run(run_id))
    attempt, from_step = await app.rerun(run_id, body.from_)
    return Rerunning(
        run_id=run_id, attempt=attempt, from_step=from_step, status_url=status_url(request, run_id)
    )


@router.post("/runs/{run_id}/events", response_model=EventSent, status_code=202, summary="Send an event")
async def send_event(
    run_id: RunId, body: Event, request: Request, key: ApiKey = Depends(require("send events"))
) -> EventSent:
    storable(body.payload, "payload")
    app = state_of(request).app
    check_reach(key, "send events", await app.get_run(run_id))
    event_id = await app.send_event(run_id, body.name, body.payload)
    return EventSent(run_id=run_id, event_id=event_id)


@router.post(
    "/runs/{run_id}/steps/{step_no}/resolve",
    status_code=204,
    summary="Settle a step whose outcome is unknown",
)
async def resolve_step(
    run_id: RunId,
    step_no: Annotated[int, Path(ge=1, le=_INT32)],
    body: Resolve,
    request: Request,
    _: ApiKey = Depends(require("settle unknown outcomes")),
) -> Response:
    storable(body.output, "output")
    await state_of(request).app.resolve(run_id, step_no, body.outcome, body.output)
    return Response(status_code=204)
