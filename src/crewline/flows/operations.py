"""What an operator does to runs that are not simply running: fork them, resolve unknown outcomes."""

from __future__ import annotations

import time
from typing import Any, Literal

from ..errors import InvalidInput, InvalidRunState, RunExists
from ..store.database import Conn
from ..store.payloads import Unreadable, check_depth, dump
from .attempts import step_number
from .review_requests import resolve_unknown_outcome
from .run_records import new_run_id
from .run_store import get_run, insert_run, lock_run, resume_run
from .step_store import copy_steps, first_unsettled_step, last_step, load_steps, settle_step, step_status

__all__ = ["Outcome", "fork_run", "resolve_step"]

Outcome = Literal["done", "retry", "fail"]


def fork_run(
    conn: Conn,
    run_id: str,
    where: int | str,
    *,
    blob_threshold: int,
    new_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """A new run of the same workflow and input that reuses every checkpoint before step ``where`` (a
    number, a step or checkpoint name, or ``name#n``: see :func:`.attempts.step_number`).

    Raises :class:`RunExists` when ``new_id`` names an existing run: copying checkpoints into it would
    make it replay another run's outcomes (an email recorded as sent that it never sent).
    """
    check_depth(overrides, "fork override")
    src = get_run(conn, run_id)
    if isinstance(src.input, Unreadable):
        raise InvalidInput(f"cannot fork run {run_id}: its input cannot be read; start a new run instead")
    named = {} if isinstance(where, int) else load_steps(conn, run_id)
    from_step = step_number(named, where, run_id, "fork")
    last = last_step(conn, run_id)
    if not 1 <= from_step <= last + 1:
        raise InvalidInput(f"cannot fork run {run_id} from step {from_step}: it has steps 1 to {last}")
    unfinished = first_unsettled_step(conn, run_id, from_step)
    if unfinished is not None:
        raise InvalidRunState(
            f"cannot fork run {run_id} from step {from_step}: step {unfinished[0]} has no recorded outcome "
            f"({unfinished[1]}); fork from step {unfinished[0]} or earlier"
        )
    fork_id, created = insert_run(
        conn,
        run_id=new_id or new_run_id(),
        workflow=src.workflow,
        version=src.version,
        queue=src.queue,
        priority=src.priority,
        input_json=dump(src.input),
        blob_threshold=blob_threshold,
        forked_from=run_id,
        fork_step=from_step,
        overrides=overrides,
    )
    if not created:
        raise RunExists(f"a run with id {fork_id!r} already exists; leave the id out or choose a new one")
    copy_steps(conn, run_id, fork_id, from_step)
    return fork_id


def parse_overrides(settings: list[str]) -> dict[str, Any]:
    """``["model=strong", "prompt=reply@candidate"]`` as fork overrides."""
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise InvalidInput(
                f"--set {item!r}: write key=value, e.g. model=strong or prompt=reply@candidate"
            )
        if key == "model":
            out["model"] = value
        elif key == "prompt":
            if "@" not in value:
                raise InvalidInput(
                    f"--set prompt={value}: name a label or version, e.g. prompt={value}@candidate"
                )
            out.setdefault("prompts", []).append(value)
        else:
            raise InvalidInput(f"--set {key}=...: only model= and prompt= can vary in a fork")
    return out


def resolve_step(
    conn: Conn,
    run_id: str,
    step_no: int,
    outcome: Outcome,
    output_json: bytes | None = None,
    resolved_by: str = "operator",
) -> None:
    """Settle an irreversible step whose outcome is unknown; the run then resumes.

    ``done``: the call happened (``output_json`` is what the step returns); ``retry``: it did not, call it
    again; ``fail``: record the step as failed, which the workflow sees as a :class:`StepError`.
    """
    status, reason, _ = lock_run(conn, run_id)
    if status != "waiting" or not (reason or "").startswith("outcome unknown"):
        raise InvalidRunState(
            f"run {run_id} is not waiting for an outcome (it is {status}); nothing to resolve"
        )
    if step_status(conn, run_id, step_no) != "intent":
        raise InvalidRunState(
            f"step {step_no} of run {run_id} has no unknown outcome ({reason}); pass the step number shown there"
        )
    if outcome not in ("done", "retry", "fail"):
        raise InvalidInput(f"outcome must be done, retry or fail, got {outcome!r}")
    now = time.time()
    settle_step(conn, run_id, step_no, outcome, output_json, now)
    resolve_unknown_outcome(conn, run_id, step_no, by=resolved_by, outcome=outcome)
    resume_run(conn, run_id, now)
