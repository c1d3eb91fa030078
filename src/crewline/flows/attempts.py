"""Reruns: a finished run continues from a named or numbered step, its earlier attempt kept as history.

``crewline runs rerun RUN --from drafted`` keeps the run's id. The steps before ``drafted`` stay and are
replayed; the steps from there on move, in the same transaction that makes the run pending again, into
one ``run_attempts`` row (with how that attempt ended), so ``runs show`` can show attempt 1 beside the
steps of attempt 2. The archived steps are one payload (a blob when large), read only for display.

Where to start is said the same way for reruns and forks (:func:`step_number`): a step number (``3``),
a step or checkpoint name (``drafted``, the first step of that name), or the n-th step of that name
(``drafted#2``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, InvalidRunState
from ..store.database import Conn
from ..store.payloads import Unreadable, dump, load_or_unreadable, store_payload
from .event_store import return_events_from
from .run_store import get_run, lock_run, restart_run
from .states import FINISHED, RunStatus
from .step_store import StepRecord, drop_steps_from, load_steps

__all__ = ["Attempt", "attempt_history", "rerun_run", "step_number"]

_NTH = re.compile(r"^(?P<name>.+)#(?P<n>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Attempt:
    """An earlier attempt of a run: how it ended and the steps it had from ``from_step`` on."""

    attempt: int
    from_step: int
    status: RunStatus
    error: dict[str, Any] | None
    finished_at: float | None
    rerun_at: float
    steps: list[StepRecord]

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "steps": [s.to_json() for s in self.steps]}


def step_number(steps: dict[int, StepRecord], where: int | str, run_id: str, verb: str) -> int:
    """The step ``where`` names: a number, a step or checkpoint name, or ``name#n`` (its n-th step)."""
    if isinstance(where, int) or where.strip().isdigit():
        return int(where)
    name = where.strip()
    matches = [n for n, s in sorted(steps.items()) if s.name == name]
    nth = 1
    found = _NTH.match(name)
    if not matches and found is not None:
        name, nth = found["name"], int(found["n"])
        matches = [n for n, s in sorted(steps.items()) if s.name == name]
    if len(matches) >= nth:
        return matches[nth - 1]
    raise InvalidInput(f"cannot {verb} run {run_id} from {where!r}: {_names_hint(steps, name, len(matches))}")


def _names_hint(steps: dict[int, StepRecord], name: str, count: int) -> str:
    numbers = ", ".join(str(n) for n, s in sorted(steps.items()) if s.name == name)
    if count == 1:
        return f"it has one step named {name!r} (step {numbers}); use {name}"
    if count:
        return f"it has {count} steps named {name!r} (steps {numbers}); use {name}#1 to {name}#{count}"
    names = list(dict.fromkeys(s.name for _, s in sorted(steps.items())))
    if not names:
        return "it has no steps recorded; give a step number"
    return f"it has no step of that name; its steps and checkpoints are {', '.join(names)}"


def rerun_run(conn: Conn, run_id: str, where: int | str, blob_threshold: int) -> tuple[int, int]:
    """Make finished run ``run_id`` pending again from step ``where``; returns (new attempt, step number).

    The steps from there on are kept as the earlier attempt; the same run then replays the steps before
    it and executes the rest again. Refused for a run that has not finished (cancel it first).
    """
    status, _, _ = lock_run(conn, run_id)
    if status not in FINISHED:
        raise InvalidRunState(
            f"cannot rerun run {run_id}: it is {status}; only completed, failed or cancelled runs can be "
            "rerun (cancel it first, or fork it)"
        )
    run = get_run(conn, run_id)
    if run.pruned_at is not None or isinstance(run.input, Unreadable):
        raise InvalidInput(f"cannot rerun run {run_id}: its input is gone or unreadable; start a new run")
    steps = load_steps(conn, run_id)
    from_step = step_number(steps, where, run_id, "rerun")
    last = max(steps, default=0)
    if not 1 <= from_step <= last + 1:
        raise InvalidInput(f"cannot rerun run {run_id} from step {from_step}: it has steps 1 to {last}")
    unfinished = next(
        (s for n, s in sorted(steps.items()) if n < from_step and s.status not in ("done", "failed")), None
    )
    if unfinished is not None:
        raise InvalidRunState(
            f"cannot rerun run {run_id} from step {from_step}: step {unfinished.step_no} has no recorded "
            f"outcome ({unfinished.status}); rerun from step {unfinished.step_no} or earlier"
        )
    kept = [s.to_json() for n, s in sorted(steps.items()) if n >= from_step]
    inline, blob = store_payload(conn, dump(kept, "the steps of the earlier attempt"), blob_threshold)
    conn.execute(
        "INSERT INTO run_attempts (run_id, attempt, from_step, status, error, finished_at, rerun_at, steps, "
        "steps_blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            run.attempt,
            from_step,
            status,
            None if run.error is None else json.dumps(run.error, default=str),
            run.finished_at,
            time.time(),
            inline,
            blob,
        ),
    )
    drop_steps_from(conn, run_id, from_step)
    return_events_from(conn, run_id, from_step)
    restart_run(conn, run_id, run.attempt + 1)
    return run.attempt + 1, from_step


def attempt_history(conn: Conn, run_id: str) -> list[Attempt]:
    """The run's earlier attempts, oldest first (none unless it was rerun)."""
    rows = conn.all(
        "SELECT attempt, from_step, status, error, finished_at, rerun_at, steps, steps_blob FROM run_attempts "
        "WHERE run_id = ? ORDER BY attempt",
        (run_id,),
    )
    return [
        Attempt(
            attempt=int(r[0]),
            from_step=int(r[1]),
            status=r[2],
            error=json.loads(r[3]) if r[3] else None,
            finished_at=r[4],
            rerun_at=float(r[5]),
            steps=_steps(load_or_unreadable(conn, r[6], r[7])),
        )
        for r in rows
    ]


def _steps(kept: Any) -> list[StepRecord]:
    if not isinstance(kept, list):  # unreadable: show the attempt without its steps
        return []
    return [StepRecord(**s) for s in kept]
