"""A run's steps as rows: the step journal's records, and the changes operators make to them.

This module alone issues SQL on ``steps`` (one row per step of a run: its name, kind, status, input and
output, error, attempts, the compensation it registered, and in a shadow run what it would have done).
:mod:`.run_store` owns ``runs`` and ``events``. Each function runs inside a transaction the caller opened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..store.database import Conn
from ..store.payloads import json_text, load_or_unreadable, store_payload
from .definitions import Effect
from .states import StepKind, StepStatus

__all__ = [
    "LargePayload",
    "StepRecord",
    "compensable_steps",
    "copy_steps",
    "drop_steps_from",
    "first_unsettled_step",
    "last_step",
    "load_steps",
    "one_step",
    "retry_step",
    "settle_step",
    "skip_step",
    "step_key",
    "step_page",
    "step_state",
    "step_status",
    "write_step",
]


@dataclass
class StepRecord:
    step_no: int
    name: str
    kind: StepKind
    effect: Effect
    status: StepStatus
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: float
    finished_at: float | None
    input: Any = None  # recorded for tools and model calls
    compensation: str | None = None  # the name of the compensation the step registered when it finished
    shadowed: dict[str, Any] | None = None  # in a shadow run: the irreversible call it did not make

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def step_key(run_id: str, step_no: int, attempt: int, sep: str = ":") -> str:
    """The id of what a step creates (its review request, child run, idempotency key): ``run:3``.

    A rerun executes the step again as a new attempt, which must not find the first attempt's request or
    child: from the second attempt on the key says which attempt it is (``run:3~2``).
    """
    base = f"{run_id}{sep}{step_no}"
    return base if attempt <= 1 else f"{base}~{attempt}"


_STEP_COLUMNS = (
    "step_no, name, kind, effect, status, output, output_blob, error, attempts, started_at, finished_at, input, "
    "input_blob, compensation, shadowed"
)


def load_steps(conn: Conn, run_id: str) -> dict[int, StepRecord]:
    rows = conn.all(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY step_no", (run_id,))
    return {r[0]: _step_from_row(conn, r, lazy=False) for r in rows}


@dataclass(frozen=True)
class LargePayload:
    """A step's input or output kept as a blob, left unread in a page of steps (see :func:`step_page`)."""

    digest: str


def step_page(conn: Conn, run_id: str, after: int, limit: int) -> list[StepRecord]:
    """Up to ``limit`` steps numbered after ``after``, in order; payloads stored as blobs are left unread
    (:class:`LargePayload`), so a page of a run with thousands of steps stays small. :func:`one_step`
    reads a step whole."""
    rows = conn.all(
        f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND step_no > ? ORDER BY step_no LIMIT ?",
        (run_id, after, limit),
    )
    return [_step_from_row(conn, r, lazy=True) for r in rows]


def one_step(conn: Conn, run_id: str, step_no: int) -> StepRecord | None:
    row = conn.one(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND step_no = ?", (run_id, step_no))
    return None if row is None else _step_from_row(conn, row, lazy=False)


def _step_from_row(conn: Conn, r: tuple[Any, ...], *, lazy: bool) -> StepRecord:
    def payload(inline: str | None, blob: str | None) -> Any:
        if lazy and blob is not None:
            return LargePayload(blob)
        return load_or_unreadable(conn, inline, blob)

    return StepRecord(
        step_no=r[0],
        name=r[1],
        kind=r[2],
        effect=r[3],
        status=r[4],
        output=payload(r[5], r[6]),
        error=json.loads(r[7]) if r[7] else None,
        attempts=r[8],
        started_at=r[9],
        finished_at=r[10],
        input=payload(r[11], r[12]),
        compensation=r[13],
        shadowed=json.loads(r[14]) if r[14] else None,
    )


def write_step(
    conn: Conn,
    run_id: str,
    step_no: int,
    *,
    name: str,
    kind: StepKind,
    effect: Effect,
    status: StepStatus,
    output_json: bytes | None,
    error: dict[str, Any] | None,
    attempts: int,
    started_at: float,
    blob_threshold: int,
    input_json: bytes | None = None,
    compensation: str | None = None,
    shadowed: dict[str, Any] | None = None,
) -> None:
    """Insert or overwrite a step's record (an upsert, so a retried commit is harmless)."""
    inline, blob = (None, None) if output_json is None else store_payload(conn, output_json, blob_threshold)
    in_inline, in_blob = (
        (None, None) if input_json is None else store_payload(conn, input_json, blob_threshold)
    )
    finished = time.time() if status in ("done", "failed") else None
    conn.defer(
        "INSERT INTO steps (run_id, step_no, name, kind, effect, status, output, output_blob, error, attempts, "
        "started_at, finished_at, input, input_blob, compensation, shadowed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step_no) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
        "effect = excluded.effect, status = excluded.status, output = excluded.output, "
        "output_blob = excluded.output_blob, error = excluded.error, attempts = excluded.attempts, "
        "finished_at = excluded.finished_at, input = COALESCE(excluded.input, steps.input), "
        "input_blob = COALESCE(excluded.input_blob, steps.input_blob), compensation = excluded.compensation, "
        "shadowed = excluded.shadowed",
        (
            run_id,
            step_no,
            name,
            kind,
            effect,
            status,
            inline,
            blob,
            json_text(error),
            attempts,
            started_at,
            finished,
            in_inline,
            in_blob,
            compensation,
            json_text(shadowed),
        ),
    )


def compensable_steps(conn: Conn, run_id: str) -> dict[int, tuple[str, str]]:
    """The run's finished steps that registered a compensation: (the step's name, the compensation's)."""
    rows = conn.all(
        "SELECT step_no, name, compensation FROM steps WHERE run_id = ? AND status = 'done' "
        "AND compensation IS NOT NULL ORDER BY step_no",
        (run_id,),
    )
    return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def step_state(conn: Conn, run_id: str, step_no: int) -> tuple[StepStatus, StepKind] | None:
    """A step's status and kind, or None if the run has no such step."""
    row = conn.one("SELECT status, kind FROM steps WHERE run_id = ? AND step_no = ?", (run_id, step_no))
    return None if row is None else (row[0], row[1])


def retry_step(conn: Conn, run_id: str, step_no: int, input_json: bytes | None, blob_threshold: int) -> None:
    """Let the replay execute a failed step again: forgotten, or marked ``retry`` with edited arguments."""
    if input_json is None:
        conn.execute("DELETE FROM steps WHERE run_id = ? AND step_no = ?", (run_id, step_no))
        return
    inline, blob = store_payload(conn, input_json, blob_threshold)
    conn.execute(
        "UPDATE steps SET status = 'retry', input = ?, input_blob = ?, error = NULL WHERE run_id = ? AND step_no = ?",
        (inline, blob, run_id, step_no),
    )


def skip_step(conn: Conn, run_id: str, step_no: int, output_json: bytes, blob_threshold: int) -> None:
    """Record a failed step as done with ``output_json``, given by an operator instead of its failure."""
    inline, blob = store_payload(conn, output_json, blob_threshold)
    conn.execute(
        "UPDATE steps SET status = 'done', output = ?, output_blob = ?, error = NULL, finished_at = ? "
        "WHERE run_id = ? AND step_no = ?",
        (inline, blob, time.time(), run_id, step_no),
    )


def last_step(conn: Conn, run_id: str) -> int:
    return int(conn.scalar("SELECT MAX(step_no) FROM steps WHERE run_id = ?", (run_id,)) or 0)


def first_unsettled_step(conn: Conn, run_id: str, before: int) -> tuple[int, str] | None:
    """(step_no, status) of the first step before ``before`` without a recorded outcome."""
    row = conn.one(
        "SELECT step_no, status FROM steps WHERE run_id = ? AND step_no < ? AND status NOT IN ('done', 'failed') "
        "ORDER BY step_no LIMIT 1",
        (run_id, before),
    )
    return None if row is None else (int(row[0]), str(row[1]))


def copy_steps(conn: Conn, source: str, target: str, before: int) -> None:
    """Give ``target`` the records of ``source``'s steps before ``before`` (a fork's reused checkpoints)."""
    conn.execute(
        "INSERT INTO steps (run_id, step_no, name, kind, effect, status, output, output_blob, error, attempts, "
        "started_at, finished_at, input, input_blob, compensation) SELECT ?, step_no, name, kind, effect, "
        "status, output, output_blob, error, attempts, started_at, finished_at, input, input_blob, compensation "
        "FROM steps WHERE run_id = ? AND step_no < ?",
        (target, source, before),
    )


def step_status(conn: Conn, run_id: str, step_no: int) -> str | None:
    row = conn.one("SELECT status FROM steps WHERE run_id = ? AND step_no = ?", (run_id, step_no))
    return None if row is None else str(row[0])


def settle_step(
    conn: Conn, run_id: str, step_no: int, outcome: str, output_json: bytes | None, now: float
) -> None:
    """Settle an intent: ``done`` with its output, ``retry`` (forget it), or ``fail``."""
    if outcome == "done":
        conn.execute(
            "UPDATE steps SET status = 'done', output = ?, output_blob = NULL, finished_at = ? "
            "WHERE run_id = ? AND step_no = ?",
            ((output_json or b"null").decode(), now, run_id, step_no),
        )
    elif outcome == "retry":
        conn.execute("DELETE FROM steps WHERE run_id = ? AND step_no = ?", (run_id, step_no))
    else:
        conn.execute(
            "UPDATE steps SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ? AND step_no = ?",
            (_OUTCOME_FAILED, now, run_id, step_no),
        )


_OUTCOME_FAILED = '{"type": "OutcomeFailed", "message": "an operator marked the outcome as failed"}'


def drop_steps_from(conn: Conn, run_id: str, from_step: int) -> None:
    """Remove the run's steps from ``from_step`` on (a rerun keeps them as an earlier attempt first)."""
    conn.execute("DELETE FROM steps WHERE run_id = ? AND step_no >= ?", (run_id, from_step))
