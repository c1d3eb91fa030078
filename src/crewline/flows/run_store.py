"""Runs as rows: the engine's reads and writes, as functions over a connection.

This module alone issues SQL on ``runs`` (:mod:`.step_store` owns ``steps``, :mod:`.event_store` the
events sent to runs); workers, the engine, operator actions, the server and retention call these functions.

Each function here runs inside a transaction the caller opened (usually a group-committed
:meth:`Database.write`), so the engine composes them into exactly one commit per checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInput, InvalidRunState, RunNotFound
from ..store.database import Conn
from ..store.dialects import CLAIM, FOR_UPDATE, RowLock
from ..store.payloads import json_text, load, load_json, load_or_unreadable, store_payload
from .review_requests import close_open_requests
from .run_records import RunRecord, new_trace_parent
from .states import FINISHED, RUN_STATES, Park, RunStatus

__all__ = [
    "FINISHED",
    "STATES",
    "CompensationPlan",
    "RunChange",
    "RunCounts",
    "RunQuery",
    "RunResult",
    "changed_runs",
    "compensation_plan",
    "count_runs",
    "due_runs",
    "find_runs",
    "get_run",
    "insert_run",
    "list_runs",
    "lock_run",
    "make_due",
    "plan_compensation",
    "restart_run",
    "run_counts",
    "run_result",
    "shadow_pairs",
    "wake_run",
]

STATES = RUN_STATES

# The runs table's columns in the order they are read; each is the RunRecord field of the same name,
# except the payloads' ``_blob`` halves.
_RUN_FIELDS = (
    "id",
    "workflow",
    "version",
    "queue",
    "priority",
    "status",
    "input",
    "input_blob",
    "output",
    "output_blob",
    "error",
    "idempotency_key",
    "parent_id",
    "parent_step",
    "forked_from",
    "fork_step",
    "wait_reason",
    "wait_event",
    "wake_at",
    "lease_owner",
    "lease_until",
    "cancel_requested",
    "recoveries",
    "created_at",
    "updated_at",
    "finished_at",
    "overrides",
    "started_by",
    "pruned_at",
    "trace_parent",
    "attempt",
    "pause_requested",
    "pause_scope",
    "shadow",
    "shadow_of",
)
_RUN_COLUMNS = ", ".join(_RUN_FIELDS)


def _run_from_row(conn: Conn, row: tuple[Any, ...]) -> RunRecord:
    values = dict(zip(_RUN_FIELDS, row, strict=True))
    for name in ("input", "output"):
        values[name] = load_or_unreadable(conn, values[name], values.pop(f"{name}_blob"))
    for name in ("error", "overrides"):
        values[name] = json.loads(values[name]) if values[name] else None
    for name in ("cancel_requested", "pause_requested", "shadow"):
        values[name] = bool(values[name])
    for name in ("priority", "recoveries", "attempt"):
        values[name] = int(values[name])
    return RunRecord(**values)


def get_run(conn: Conn, run_id: str) -> RunRecord:
    row = conn.one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}: list runs with `crewline runs list`")
    return _run_from_row(conn, row)


def get_runs(conn: Conn, run_ids: list[str]) -> list[RunRecord]:
    """Several runs in one query, in the order asked."""
    rows = conn.all(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})", run_ids)
    found = {r[0]: _run_from_row(conn, r) for r in rows}
    return [found[rid] for rid in run_ids if rid in found]


def lock_run(conn: Conn, run_id: str) -> tuple[RunStatus, str | None, str | None]:
    """Lock the run's row until commit; returns (status, wait_reason, wait_event)."""
    suffix = conn.dialect.lock_rows_suffix(FOR_UPDATE)
    row = conn.one(f"SELECT status, wait_reason, wait_event FROM runs WHERE id = ?{suffix}", (run_id,))
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}: list runs with `crewline runs list`")
    return row[0], row[1], row[2]


def list_runs(
    conn: Conn,
    *,
    state: str | None = None,
    workflow: str | None = None,
    parent_id: str | None = None,
    started_by: str | None = None,
    limit: int = 50,
    after: tuple[float, str] | None = None,
) -> list[RunRecord]:
    """Runs newest first; ``after`` = (created_at, id) of the last run of the previous page."""
    query = RunQuery(state, workflow, parent_id, started_by, limit=limit, after=after)
    return find_runs(conn, query)


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list: equal to the given fields, created in ``[since, until)``, ``search`` found in
    the input or output (inline payloads; case-insensitive), after the cursor ``after``."""

    state: str | None = None
    workflow: str | None = None
    parent_id: str | None = None
    started_by: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    limit: int = 50
    after: tuple[float, str] | None = None


def find_runs(conn: Conn, query: RunQuery) -> list[RunRecord]:
    """Runs newest first, filtered by ``query``.

    Keyset pagination on (created_at DESC, id) stays stable while runs are being added, unlike offsets.
    """
    if query.state is not None and query.state not in STATES:
        raise InvalidInput(f"unknown run state {query.state!r}: use one of {', '.join(STATES)}")
    where: list[str] = []
    params: list[Any] = []
    filters = (
        ("status = ?", query.state),
        ("workflow = ?", query.workflow),
        ("parent_id = ?", query.parent_id),
        ("started_by = ?", query.started_by),
        ("created_at >= ?", query.since),
        ("created_at < ?", query.until),
    )
    for clause, value in filters:
        if value is not None:
            where.append(clause)
            params.append(value)
    if query.search:
        pattern = "%" + _like_escaped(query.search.lower()) + "%"
        where.append("(LOWER(input) LIKE ? ESCAPE '\\' OR LOWER(output) LIKE ? ESCAPE '\\')")
        params.extend((pattern, pattern))
    if query.after is not None:
        where.append("(created_at < ? OR (created_at = ? AND id > ?))")
        params.extend((query.after[0], query.after[0], query.after[1]))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.all(
        f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY created_at DESC, id LIMIT ?",
        (*params, query.limit),
    )
    return [_run_from_row(conn, r) for r in rows]


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def shadow_pairs(
    conn: Conn, workflow: str, since: float, limit: int = 1000
) -> list[tuple[RunRecord, RunRecord]]:
    """(live run, its shadow run) of live workflow ``workflow`` started since ``since``, newest first."""
    shadows = [
        _run_from_row(conn, row)
        for row in conn.all(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE shadow_of IN (SELECT id FROM runs WHERE workflow = ? "
            "AND created_at >= ?) ORDER BY created_at DESC LIMIT ?",
            (workflow, since, limit),
        )
    ]
    live = {r.id: r for r in get_runs(conn, [s.shadow_of for s in shadows if s.shadow_of])} if shadows else {}
    return [(live[s.shadow_of], s) for s in shadows if s.shadow_of in live]


def count_runs(conn: Conn) -> dict[str, int]:
    """How many runs are in each state."""
    return {str(r[0]): int(r[1]) for r in conn.all("SELECT status, COUNT(*) FROM runs GROUP BY status")}


def due_runs(conn: Conn, now: float) -> dict[str, tuple[int, float]]:
    """Per queue: how many runs are due for a worker now, and since when the longest-waiting one is."""
    rows = conn.all(
        "SELECT queue, COUNT(*), MIN(wake_at) FROM runs WHERE status IN ('pending', 'waiting') AND wake_at <= ? "
        "GROUP BY queue",
        (now,),
    )
    return {str(q): (int(n), float(since)) for q, n, since in rows}


def insert_run(
    conn: Conn,
    *,
    run_id: str,
    workflow: str,
    version: str | None,
    queue: str,
    priority: int,
    input_json: bytes,
    blob_threshold: int,
    idempotency_key: str | None = None,
    parent_id: str | None = None,
    parent_step: int | None = None,
    forked_from: str | None = None,
    fork_step: int | None = None,
    overrides: dict[str, Any] | None = None,
    started_by: str | None = None,
    shadow_of: str | None = None,
    shadow: bool = False,
) -> tuple[str, bool]:
    """Create a pending run; returns (run id, created). An existing id or idempotency key wins."""
    now = time.time()
    inline, blob = store_payload(conn, input_json, blob_threshold)
    # One statement in the common case: a conflict on the id or the idempotency key inserts nothing.
    created = conn.scalar(
        "INSERT INTO runs (id, workflow, version, queue, priority, status, input, input_blob, idempotency_key, "
        "parent_id, parent_step, forked_from, fork_step, wake_at, created_at, updated_at, overrides, started_by, "
        "trace_parent, shadow, shadow_of) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING RETURNING id",
        (
            run_id,
            workflow,
            version,
            queue,
            priority,
            inline,
            blob,
            idempotency_key,
            parent_id,
            parent_step,
            forked_from,
            fork_step,
            now,
            now,
            now,
            json_text(overrides),
            started_by,
            new_trace_parent(),
            int(shadow),
            shadow_of,
        ),
    )
    if created is not None:
        return run_id, True
    if idempotency_key is not None:
        existing = conn.scalar("SELECT id FROM runs WHERE idempotency_key = ?", (idempotency_key,))
        if existing is not None:
            return str(existing), False
    return run_id, False


def restart_run(conn: Conn, run_id: str, attempt: int) -> None:
    """A finished run is pending again as ``attempt``: any worker replays it from its kept steps."""
    now = time.time()
    conn.execute(
        "UPDATE runs SET status = 'pending', attempt = ?, output = NULL, output_blob = NULL, error = NULL, "
        "finished_at = NULL, wait_reason = NULL, wait_event = NULL, wake_at = ?, lease_owner = NULL, "
        "lease_until = NULL, cancel_requested = 0, updated_at = ? WHERE id = ?",
        (attempt, now, now, run_id),
    )


@dataclass(frozen=True)
class RunResult:
    """How a run stands, with its output once completed and its error once failed or cancelled."""

    status: RunStatus
    output: Any
    error: dict[str, Any] | None


def run_result(conn: Conn, run_id: str) -> RunResult:
    """The run's status, output and error (a parent reading its child)."""
    row = conn.one("SELECT status, output, output_blob, error FROM runs WHERE id = ?", (run_id,))
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}: list runs with `crewline runs list`")
    output = load(conn, row[1], row[2]) if row[0] == "completed" else None
    return RunResult(row[0], output, load_json(row[3]) if row[3] else None)


def wake_parent(conn: Conn, child_id: str, parent_id: str | None) -> None:
    """A child finished: make its parent claimable if it is waiting for this child."""
    if parent_id is None:
        return
    status, reason, _ = lock_run(conn, parent_id)
    if status in ("waiting", "paused") and reason == f"child:{child_id}":
        conn.execute(
            "UPDATE runs SET wake_at = ?, updated_at = ? WHERE id = ?", (time.time(), time.time(), parent_id)
        )


def finish_run(
    conn: Conn,
    run_id: str,
    *,
    status: RunStatus,
    output_json: bytes | None = None,
    error: dict[str, Any] | None = None,
    owner: str | None = None,
    blob_threshold: int = 4096,
) -> bool:
    """Mark a run finished; with ``owner``, only if that worker still holds it. Returns whether it did."""
    inline, blob = (None, None) if output_json is None else store_payload(conn, output_json, blob_threshold)
    now = time.time()
    guard, params = ("AND lease_owner = ? AND status = 'running'", (owner,)) if owner else ("", ())
    row = conn.one(
        "UPDATE runs SET status = ?, output = ?, output_blob = ?, error = ?, finished_at = ?, updated_at = ?, "
        "lease_owner = NULL, lease_until = NULL, wake_at = NULL, wait_reason = NULL, compensate = NULL "
        f"WHERE id = ? {guard} "
        "RETURNING parent_id",
        (status, inline, blob, json_text(error), now, now, run_id, *params),
    )
    if row is None:
        return False
    if status == "cancelled":
        close_open_requests(conn, run_id, "run cancelled")
    wake_parent(conn, run_id, row[0])
    return True


def cancel_run(conn: Conn, run_id: str) -> str:
    """Cancel now if the run is not executing, else ask its worker to stop at the next step boundary."""
    status, _, _ = lock_run(conn, run_id)
    if status in FINISHED:
        raise InvalidRunState(f"run {run_id} is already {status}; nothing to cancel")
    children = [r[0] for r in conn.all("SELECT id FROM runs WHERE parent_id = ?", (run_id,))]
    for child in children:
        child_status = conn.scalar("SELECT status FROM runs WHERE id = ?", (child,))
        if child_status not in FINISHED:
            cancel_run(conn, child)
    if status == "running":
        conn.execute(
            "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (time.time(), run_id)
        )
        return "cancel requested"
    finish_run(
        conn, run_id, status="cancelled", error={"type": "Cancelled", "message": "cancelled by request"}
    )
    return "cancelled"


PauseScope = Literal["run", "workflow", "queue"]
PauseResult = Literal["paused", "pause requested", "already paused", "resumed", "pause withdrawn"]


def pause_run(conn: Conn, run_id: str, scope: PauseScope = "run") -> PauseResult:
    """Pause now if the run is not executing, else ask its worker to pause it at the next step boundary.

    A paused run keeps what it was waiting for (an approval, an event, a time): a wake-up that arrives
    while it is paused is kept, and takes effect when it resumes.
    """
    status, _, _ = lock_run(conn, run_id)
    if status in FINISHED:
        raise InvalidRunState(f"run {run_id} is already {status}; only an unfinished run can be paused")
    now = time.time()
    if status == "paused":
        return "already paused"
    if status == "running":
        conn.execute(
            "UPDATE runs SET pause_requested = 1, pause_scope = ?, updated_at = ? WHERE id = ?",
            (scope, now, run_id),
        )
        return "pause requested"
    conn.execute(
        "UPDATE runs SET status = 'paused', pause_scope = ?, updated_at = ? WHERE id = ?",
        (scope, now, run_id),
    )
    return "paused"


def unpause_run(conn: Conn, run_id: str) -> PauseResult:
    """A paused run waits again for what it waited for before, or is due at once if it waited for nothing."""
    status, _, _ = lock_run(conn, run_id)
    if status == "running" and conn.scalar("SELECT pause_requested FROM runs WHERE id = ?", (run_id,)):
        conn.execute("UPDATE runs SET pause_requested = 0, pause_scope = NULL WHERE id = ?", (run_id,))
        return "pause withdrawn"
    if status != "paused":
        raise InvalidRunState(f"run {run_id} is {status}, not paused; only a paused run can be resumed")
    _resume(conn, "id = ?", (run_id,))
    return "resumed"


def pause_runs_of(conn: Conn, scope: Literal["workflow", "queue"], name: str) -> int:
    """Pause every unfinished run of a workflow or queue; returns how many were paused or asked to."""
    column = "workflow" if scope == "workflow" else "queue"
    now = time.time()
    asked = conn.execute(
        f"UPDATE runs SET pause_requested = 1, pause_scope = ?, updated_at = ? WHERE {column} = ? "
        "AND status = 'running' AND pause_requested = 0",
        (scope, now, name),
    )
    paused = conn.execute(
        f"UPDATE runs SET status = 'paused', pause_scope = ?, updated_at = ? WHERE {column} = ? "
        "AND status IN ('pending', 'waiting')",
        (scope, now, name),
    )
    return int(asked.rowcount) + int(paused.rowcount)


def resume_runs_of(conn: Conn, scope: Literal["workflow", "queue"], name: str) -> int:
    """Resume the runs a workflow or queue pause paused (not those an operator paused one by one)."""
    column = "workflow" if scope == "workflow" else "queue"
    conn.execute(
        f"UPDATE runs SET pause_requested = 0, pause_scope = NULL WHERE {column} = ? AND status = 'running' "
        "AND pause_scope = ?",
        (name, scope),
    )
    return _resume(conn, f"{column} = ? AND pause_scope = ?", (name, scope))


def _resume(conn: Conn, where: str, params: tuple[Any, ...]) -> int:
    now = time.time()
    cur = conn.execute(
        "UPDATE runs SET status = CASE WHEN wait_reason IS NULL THEN 'pending' ELSE 'waiting' END, "
        "wake_at = CASE WHEN wait_reason IS NULL THEN COALESCE(wake_at, ?) ELSE wake_at END, "
        f"pause_scope = NULL, updated_at = ? WHERE status = 'paused' AND {where}",
        (now, now, *params),
    )
    return int(cur.rowcount)


@dataclass(frozen=True)
class CompensationPlan:
    """An operator's request to run a run's compensations: why (cancel, undo, abandon) and which steps
    (None: every step that registered one), kept on the run until it ends."""

    why: str
    steps: tuple[int, ...] | None = None
    by: str = "operator"

    def to_json(self) -> str:
        return json.dumps({"why": self.why, "steps": self.steps, "by": self.by})


def compensation_plan(conn: Conn, run_id: str) -> CompensationPlan | None:
    raw = conn.scalar("SELECT compensate FROM runs WHERE id = ?", (run_id,))
    if not raw:
        return None
    data = json.loads(raw)
    steps = data.get("steps")
    return CompensationPlan(str(data["why"]), None if steps is None else tuple(steps), str(data.get("by")))


def plan_compensation(conn: Conn, run_id: str, plan: CompensationPlan) -> str:
    """Make the run's worker replay it up to where it stands and run its compensations: at once if it is
    running (it stops at its next step boundary), else by making it due again; its error and output stay."""
    status, _, _ = lock_run(conn, run_id)
    now = time.time()
    conn.execute(
        "UPDATE runs SET compensate = ?, cancel_requested = 1, updated_at = ? WHERE id = ?",
        (plan.to_json(), now, run_id),
    )
    if status == "running":
        return "compensation requested"
    verb = {"cancel": "cancelled", "undo": "undone", "abandon": "abandoned"}.get(plan.why, plan.why)
    close_open_requests(conn, run_id, f"run {verb}: compensating")
    conn.execute(
        "UPDATE runs SET status = 'pending', wait_reason = NULL, wait_event = NULL, wake_at = ?, "
        "finished_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        (now, now, run_id),
    )
    return "compensating"


def wake_run(conn: Conn, run_id: str, overrides: dict[str, Any] | None = None) -> None:
    """A waiting run is due now (an operator settled what it waited for); ``overrides`` vary what follows."""
    now = time.time()
    if overrides is not None:
        conn.execute("UPDATE runs SET overrides = ? WHERE id = ?", (json_text(overrides), run_id))
    conn.execute(
        "UPDATE runs SET status = 'pending', wait_reason = NULL, wake_at = ?, updated_at = ? WHERE id = ?",
        (now, now, run_id),
    )


def make_due(conn: Conn, run_id: str, now: float) -> None:
    """The run is due ``now``: a worker looks at it again (an event it waits for arrived)."""
    conn.execute("UPDATE runs SET wake_at = ?, updated_at = ? WHERE id = ?", (now, now, run_id))


# -- claims, leases and parking (for workers/claim.py and the engine) ------------------------------------


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def running_per_queue(conn: Conn, queues: Sequence[str], now: float) -> dict[str, int]:
    """Runs executing under a live lease, per queue of ``queues``."""
    rows = conn.all(
        f"SELECT queue, COUNT(*) FROM runs WHERE status = 'running' AND lease_until >= ? "
        f"AND queue IN ({_marks(len(queues))}) GROUP BY queue",
        (now, *queues),
    )
    return {str(q): int(n) for q, n in rows}


def claimable(
    conn: Conn, workflows: Sequence[str], skip_queues: Sequence[str], now: float, limit: int
) -> list[tuple[str, str]]:
    """(id, queue) of due runs of ``workflows``, highest priority then longest due first, locked against
    other claimers (who skip them)."""
    where_full = f" AND queue NOT IN ({_marks(len(skip_queues))})" if skip_queues else ""
    return [
        (str(r[0]), str(r[1]))
        for r in conn.all(
            "SELECT id, queue FROM runs WHERE ((status IN ('pending', 'waiting') AND wake_at <= ?) "
            "OR (status = 'running' AND lease_until < ?)) "
            f"AND workflow IN ({_marks(len(workflows))}){where_full} "
            "ORDER BY priority DESC, wake_at LIMIT ?" + conn.dialect.lock_rows_suffix(CLAIM),
            (now, now, *workflows, *skip_queues, limit),
        )
    ]


def take_runs(conn: Conn, run_ids: Sequence[str], owner: str, lease_until: float, now: float) -> None:
    """Lease the runs to ``owner``; a run taken over from a dead worker counts a recovery."""
    conn.execute(
        "UPDATE runs SET recoveries = recoveries + (CASE WHEN status = 'running' THEN 1 ELSE 0 END), "
        "status = 'running', lease_owner = ?, lease_until = ?, wake_at = NULL, wait_reason = NULL, "
        f"wait_event = NULL, updated_at = ? WHERE id IN ({_marks(len(run_ids))})",
        (owner, lease_until, now, *run_ids),
    )


def extend_leases(conn: Conn, owner: str, lease_until: float, run_ids: Sequence[str]) -> set[str]:
    """Push out the leases ``owner`` holds on ``run_ids``; returns those it still holds."""
    if not run_ids:
        return set()
    rows = conn.all(
        "UPDATE runs SET lease_until = ? WHERE lease_owner = ? AND status = 'running' "
        f"AND id IN ({_marks(len(run_ids))}) RETURNING id",
        (lease_until, owner, *run_ids),
    )
    return {r[0] for r in rows}


def lost_runs(conn: Conn, owner: str, run_ids: Sequence[str]) -> set[str]:
    """Of ``run_ids``, those ``owner`` no longer holds because its lease lapsed (taken or requeued)."""
    if not run_ids:
        return set()
    rows = conn.all(
        f"SELECT id FROM runs WHERE id IN ({_marks(len(run_ids))}) "
        "AND status IN ('pending', 'running') AND (lease_owner IS NULL OR lease_owner <> ?)",
        (*run_ids, owner),
    )
    return {r[0] for r in rows}


@dataclass(frozen=True)
class Held:
    """The runs a worker holds, and those of them an operator asked to cancel or to pause."""

    runs: set[str]
    cancel: set[str]
    pause: set[str]


def held_flags(conn: Conn, owner: str) -> Held:
    rows = conn.all(
        "SELECT id, cancel_requested, pause_requested FROM runs WHERE lease_owner = ? AND status = 'running'",
        (owner,),
    )
    return Held({r[0] for r in rows}, {r[0] for r in rows if r[1]}, {r[0] for r in rows if r[2]})


def release_runs(conn: Conn, owner: str, now: float) -> int:
    """Give back whatever ``owner`` still holds, due ``now``, for another worker to take."""
    cur = conn.execute(
        "UPDATE runs SET status = CASE WHEN pause_requested = 1 THEN 'paused' ELSE 'pending' END, "
        "pause_requested = 0, lease_owner = NULL, lease_until = NULL, wake_at = ?, updated_at = ? "
        "WHERE lease_owner = ? AND status = 'running'",
        (now, now, owner),
    )
    return int(cur.rowcount)


# Checking a lease must not block inserts of rows that reference the run (its steps, events).
_LEASE_LOCK = RowLock(no_key=True)


def held_leases(conn: Conn, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (run, owner) pairs still hold their run's lease; locks those rows until commit."""
    rows = conn.all(
        f"SELECT id, lease_owner FROM runs WHERE id IN ({_marks(len(keys))}) AND status = 'running'"
        + conn.dialect.lock_rows_suffix(_LEASE_LOCK),
        [k[0] for k in keys],
    )
    return {(r[0], r[1]) for r in rows}


def assert_leases(conn: Conn, keys: list[tuple[str, str]]) -> None:
    """Fail the transaction (a division by zero) unless every (run, owner) pair holds its run's lease,
    locking the rows as :func:`held_leases` does; sent without waiting for its answer (SQLite answers a
    division by zero with NULL, so a write there takes :func:`held_leases` instead)."""
    pairs = sorted(set(keys))
    held = " OR ".join(["(id = ? AND lease_owner = ?)"] * len(pairs))
    conn.execute(
        f"SELECT 1 / CASE WHEN COUNT(*) = {len(pairs)} THEN 1 ELSE 0 END FROM (SELECT id FROM runs "
        f"WHERE status = 'running' AND ({held})" + conn.dialect.lock_rows_suffix(_LEASE_LOCK) + ") AS held",
        [value for pair in pairs for value in pair],
    )


def park_run(conn: Conn, run_id: str, park: Park) -> None:
    """Release the run: it waits (or is pending again) and no worker holds it."""
    # A pause asked for while the run was executing wins over the state it parks in (a sleep, say):
    # it waits for the same thing, paused, and takes it up again once resumed.
    conn.execute(
        "UPDATE runs SET status = CASE WHEN pause_requested = 1 THEN 'paused' ELSE ? END, wait_reason = ?, "
        "wait_event = ?, wake_at = ?, lease_owner = NULL, lease_until = NULL, pause_requested = 0, "
        "updated_at = ? WHERE id = ?",
        (park.status, park.reason, park.event, park.wake_at, time.time(), run_id),
    )


def wake_if_waiting(conn: Conn, run_id: str, reason: str, now: float) -> None:
    """Make the run due if it is still waiting for ``reason`` (a paused one once it is resumed)."""
    conn.execute(
        "UPDATE runs SET wake_at = ?, updated_at = ? WHERE id = ? AND status IN ('waiting', 'paused') "
        "AND wait_reason = ?",
        (now, now, run_id, reason),
    )


def resume_run(conn: Conn, run_id: str, now: float) -> None:
    """A waiting run becomes pending and due ``now``."""
    conn.execute(
        "UPDATE runs SET status = 'pending', wait_reason = NULL, wake_at = ?, updated_at = ? WHERE id = ?",
        (now, now, run_id),
    )


def finished_among(conn: Conn, run_ids: Sequence[str]) -> set[str]:
    """Which of ``run_ids`` have finished."""
    if not run_ids:
        return set()
    rows = conn.all(
        f"SELECT id FROM runs WHERE id IN ({_marks(len(run_ids))}) AND status IN ({_marks(len(FINISHED))})",
        (*run_ids, *FINISHED),
    )
    return {str(r[0]) for r in rows}


# -- health, for alert rules ---------------------------------------------------------------------------


def stuck_runs(conn: Conn, late: float, workflow: str | None) -> tuple[int, tuple[str, str] | None]:
    """How many runs are running under a lease expired before ``late``, or pending/waiting and due
    before it; and (id, status) of the least recently updated of them."""
    sql = (
        "FROM runs WHERE ((status = 'running' AND lease_until < ?) "
        "OR (status IN ('pending', 'waiting') AND wake_at < ?))"
    )
    params: list[object] = [late, late]
    if workflow is not None:
        sql += " AND workflow = ?"
        params.append(workflow)
    count = int(conn.scalar(f"SELECT COUNT(*) {sql}", params) or 0)
    oldest = conn.one(f"SELECT id, status {sql} ORDER BY updated_at LIMIT 1", params)
    return count, None if oldest is None else (str(oldest[0]), str(oldest[1]))


def due_backlog(conn: Conn, now: float, queue: str | None) -> tuple[int, float | None]:
    """How many pending runs are due (on ``queue`` when given), and the earliest due time among them."""
    sql, params = "FROM runs WHERE status = 'pending' AND wake_at <= ?", list[object]([now])
    if queue is not None:
        sql += " AND queue = ?"
        params.append(queue)
    row = conn.one(f"SELECT COUNT(*), MIN(wake_at) {sql}", params)
    if row is None:
        return 0, None
    return int(row[0]), None if row[1] is None else float(row[1])


def last_started(conn: Conn, workflow: str) -> float | None:
    """When the workflow's latest run was created."""
    last = conn.scalar("SELECT MAX(created_at) FROM runs WHERE workflow = ?", (workflow,))
    return None if last is None else float(last)


@dataclass(frozen=True)
class RunCounts:
    """Runs created since a time by their state now; runs completed since then; runs due per queue now."""

    by_state: dict[str, int]
    completed: int
    queue_depth: dict[str, int]


# One sum per state rather than GROUP BY status: grouping invites the planner to walk a status index over
# the whole table (a quarter of a second at 100,000 runs) instead of the window of runs_created_status.
_COUNT_STATES = ", ".join(f"SUM(CASE WHEN status = '{s}' THEN 1 ELSE 0 END)" for s in STATES)


def run_counts(conn: Conn, since: float) -> RunCounts:
    row = conn.one(f"SELECT {_COUNT_STATES} FROM runs WHERE created_at >= ?", (since,)) or ()
    states = [(s, n) for s, n in zip(STATES, row, strict=False) if n]
    completed = conn.scalar(
        "SELECT COUNT(*) FROM runs WHERE status = 'completed' AND finished_at >= ?", (since,)
    )
    queues = conn.all(
        "SELECT queue, COUNT(*) FROM runs WHERE status = 'pending' GROUP BY queue ORDER BY queue"
    )
    return RunCounts(
        {str(s): int(n) for s, n in states}, int(completed or 0), {str(q): int(n) for q, n in queues}
    )


@dataclass(frozen=True)
class RunChange:
    id: str
    workflow: str
    status: str
    updated_at: float


def changed_runs(conn: Conn, since: float, limit: int = 200) -> list[RunChange]:
    """Runs whose row changed after ``since``, oldest change first (the console's live updates)."""
    rows = conn.all(
        "SELECT id, workflow, status, updated_at FROM runs WHERE updated_at > ? ORDER BY updated_at LIMIT ?",
        (since, limit),
    )
    return [RunChange(str(i), str(w), str(s), float(u)) for i, w, s, u in rows]
