"""Executing one claimed run: replay its records, run it to its next park or its end, record the end.

Each change of a run's state is one INFO line on the ``crewline.runs`` logger (started, resumed, waiting
and for what, completed, failed with the error, cancelled): what an operator reads in the server's log.
Ids, workflow names and error messages only; never the run's input or output.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Literal

from ..errors import Cancelled, DatabaseUnavailable, RunFailed, StepError
from ..observe.events import RunEvent
from ..store.database import Conn
from ..store.payloads import Unreadable, dump
from .compensation import End, settle_end
from .context import Context
from .definitions import Workflow
from .engine import Engine, LeaseLost, RunSignals, Suspend
from .run_records import RunRecord
from .run_store import CompensationPlan, compensation_plan, finish_run
from .shadow import spending_as
from .states import Park, RunStatus
from .step_store import StepRecord, load_steps

__all__ = ["execute_run", "log_end"]

log = logging.getLogger("crewline.flows")
runs_log = logging.getLogger("crewline.runs")


async def execute_run(engine: Engine, run: RunRecord, owner: str, signals: RunSignals) -> str:
    """Run ``run`` (already claimed by ``owner``); returns its status afterwards, or "parked" / "lost"."""
    wf = engine.resolve(run.workflow)
    steps, plan = await engine.db.read(
        lambda conn: (load_steps(conn, run.id), compensation_plan(conn, run.id))
    )
    blocked = unreadable_error(run, steps)
    if blocked is not None:
        return await _record_end(engine, run, owner, End("failed", None, blocked))
    ctx = Context(engine, run, steps, owner, signals)
    runs_log.info("run %s (%s) %s", run.id, run.workflow, "resumed" if steps else "started")
    _emit_run(engine, run, "resumed" if steps else "started")
    try:
        if plan is not None:
            signals.cancel = True  # the replay stops at the first step with no recorded outcome
        end = await _execute(engine, wf, ctx, plan)
        end = await settle_end(ctx.journal, wf, plan, end)
    except Suspend as e:
        why = str(e) if str(e) != "pending" else "released to another worker (shutting down)"
        runs_log.info("run %s (%s) %s", run.id, run.workflow, why)
        _emit_run(engine, run, "parked", reason=str(e))
        return "parked"
    except LeaseLost as e:
        log.warning("%s", e)
        return "lost"
    except DatabaseUnavailable as e:
        # Nothing can be recorded now; the lease lapses and a worker resumes the run from its records.
        log.error("run %s abandoned, the database is unreachable: %s", run.id, e)
        return "lost"
    return await _record_end(engine, run, owner, end, planned=plan is not None)


async def _execute(engine: Engine, wf: Workflow, ctx: Context, plan: CompensationPlan | None) -> End:
    """Run the workflow function (replaying what is recorded) to its end, as the status it ends in.

    Under an operator's compensation plan a cancel does not stop the run before it starts: the replay
    must reach the steps whose compensations are due.
    """
    run = ctx.run
    try:
        if run.cancel_requested and plan is None:
            raise Cancelled(f"run {run.id} was cancelled")
        if wf.takes_input:
            result = await wf.fn(ctx, wf.validate_input(run.input))
        else:
            result = await wf.fn(ctx)
        output = dump(
            result if wf.output_adapter is None else wf.output_adapter.dump_python(result, mode="json"),
            "the run's output",
        )
        engine.crash_point("before_run_completion", ctx.step_count)
        return End("completed", output)
    except Cancelled as e:
        return End("cancelled", None, {"type": "Cancelled", "message": str(e), "step": ctx.step_count})
    except Exception as e:
        return End("failed", None, error_info(e, ctx.step_count))


async def _record_end(engine: Engine, run: RunRecord, owner: str, end: End, *, planned: bool = True) -> str:
    """Record the run's end; unless ``planned``, an undo asked for while it ran releases it instead, so
    that the next execution runs its compensations."""
    status, output, error = end.status, end.output, end.error

    def write(conn: Conn) -> bool | None:
        if not planned and compensation_plan(conn, run.id) is not None:
            engine.park(conn, run.id, Park.released(time.time()))
            return None
        return finish_run(
            conn,
            run.id,
            status=status,
            output_json=output,
            error=error,
            owner=owner,
            blob_threshold=engine.blob_threshold,
        )

    try:
        done = await engine.checkpoint(run.id, owner, write)
    except (LeaseLost, DatabaseUnavailable) as e:
        log.warning("run %s: could not record its end: %s", run.id, e)
        return "lost"
    if done is None:
        runs_log.info("run %s (%s) released to run its compensations", run.id, run.workflow)
        return "parked"
    if done:
        log_end(run, status, error)
        if status in ("completed", "failed", "cancelled"):
            _emit_run(engine, run, status, error_type=None if error is None else str(error.get("type")))
        engine.run_finished(run.id)
        if run.parent_id:
            engine.work_available.set()
    return status


def _emit_run(
    engine: Engine,
    run: RunRecord,
    status: Literal["started", "resumed", "parked", "completed", "failed", "cancelled"],
    *,
    error_type: str | None = None,
    reason: str | None = None,
) -> None:
    if engine.observers:  # building the event costs nothing when nobody listens
        event = RunEvent(
            run_id=run.id,
            workflow=spending_as(run.workflow, run.shadow),  # a shadow run counts apart in metrics
            status=status,
            at=time.time(),
            created_at=run.created_at,
            queue=run.queue,
            trace_parent=run.trace_parent,
            error_type=error_type,
            reason=reason,
        )
        engine.observers.emit(event)


def unreadable_error(run: RunRecord, steps: dict[int, StepRecord]) -> dict[str, Any] | None:
    """The error to fail ``run`` with when a payload it needs cannot be read back, else None.

    Replaying would hand workflow code a stand-in instead of the recorded value, so the run stops here,
    saying what to do.
    """
    if isinstance(run.input, Unreadable):
        message = f"run {run.id} cannot be executed: its input cannot be read; start a new run instead"
        return {"type": "UnreadablePayload", "message": message, "step": None}
    for n, step in sorted(steps.items()):
        if isinstance(step.output, Unreadable):
            message = (
                f"run {run.id} cannot be replayed: the recorded output of step {n} ({step.name}) cannot be "
                f"read; fork it from step {n} to execute that step again"
            )
            return {"type": "UnreadablePayload", "message": message, "step": n, "step_name": step.name}
    return None


def log_end(run: RunRecord, status: RunStatus, error: dict[str, Any] | None) -> None:
    if status == "completed":
        seconds = time.time() - run.created_at
        took = f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
        runs_log.info("run %s (%s) completed in %s", run.id, run.workflow, took)
    elif status == "failed" and error is not None:
        message = str(error.get("message") or "").strip().splitlines()
        runs_log.info(
            "run %s (%s) failed at step %s: %s: %s",
            run.id,
            run.workflow,
            error.get("step"),
            error.get("type"),
            message[0][:300] if message else "",
        )
    else:
        runs_log.info("run %s (%s) %s", run.id, run.workflow, status)


def error_info(exc: BaseException, step_count: int) -> dict[str, Any]:
    """What a failed run records: the original error type, message, and the step it happened at."""
    if isinstance(exc, StepError):
        return {"type": exc.error_type, "message": exc.message, "step": exc.step, "step_name": exc.name}
    if isinstance(exc, RunFailed):
        return {"type": "RunFailed", "message": str(exc), "step": step_count}
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-8)
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:4000],
        "step": step_count,
        "in_workflow_code": True,
        "traceback": "".join(tb)[-4000:],
    }
