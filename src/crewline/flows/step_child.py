"""``ctx.child``: start a workflow as a child run and wait, parked, for its output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RunFailed
from ..store.database import Conn
from ..store.payloads import dump
from .definitions import Workflow
from .engine import Suspend
from .journal import Entry, Journal, Outcome
from .run_store import insert_run, run_result
from .states import Park

__all__ = ["Child", "run_child"]


@dataclass(frozen=True)
class Child:
    """What ``ctx.child`` was asked (see its docstring)."""

    workflow: Workflow | str | Callable[..., Any]
    input: Any = None
    run_id: str | None = None


@dataclass(frozen=True)
class _Start:
    """The child run a live child step starts (``input_json`` is None once it exists)."""

    entry: Entry
    workflow: Workflow
    run_id: str
    input_json: bytes | None


async def run_child(journal: Journal, ask: Child) -> Any:
    wf = journal.engine.resolve(ask.workflow)
    entry = await journal.begin(wf.name, "child")
    rec = entry.record
    if rec is not None and entry.finished:
        return _outcome(rec.status, rec.output, rec.error, wf)
    if rec is not None:
        start = _Start(entry, wf, rec.output["child"], None)
    else:
        input_json = dump(wf.dump_input(wf.validate_input(ask.input)))
        start = _Start(entry, wf, ask.run_id or journal.step_key(entry.n, "."), input_json)
    outcome, output, error = await journal.transact(lambda conn: _attempt(journal, conn, start))
    journal.engine.work_available.set()
    if outcome == "parked":
        raise Suspend(f"waiting for child run {start.run_id}")
    return _outcome(outcome, output, error, wf)


def _attempt(journal: Journal, conn: Conn, start: _Start) -> tuple[str, Any, Any]:
    """Start the child if it is new, then record its outcome, or park the parent until it has one."""
    wf, entry, child_id = start.workflow, start.entry, start.run_id
    if start.input_json is not None:
        insert_run(
            conn,
            run_id=child_id,
            workflow=wf.name,
            version=wf.version,
            queue=wf.queue,
            priority=wf.priority,
            input_json=start.input_json,
            blob_threshold=journal.engine.blob_threshold,
            parent_id=journal.run_id,
            parent_step=entry.n,
        )
    result = run_result(conn, child_id)
    if result.status == "completed":
        journal.write(conn, entry, Outcome("done", dump(result.output)))
        return "done", result.output, None
    if result.status in ("failed", "cancelled"):
        error = {"type": "RunFailed", "child": child_id, "status": result.status, "error": result.error}
        journal.write(conn, entry, Outcome("failed", None, error))
        return "failed", None, error
    journal.write(conn, entry, Outcome("waiting", dump({"child": child_id})))
    journal.park(conn, Park.on_child(child_id))
    return "parked", None, None


def _outcome(status: str, output: Any, error: dict[str, Any] | None, wf: Workflow) -> Any:
    if status in ("done", "completed"):
        return output if wf.output_adapter is None else wf.output_adapter.validate_python(output)
    err = error or {}
    raise RunFailed(str(err.get("child")), str(err.get("status", "failed")), err.get("error"))
