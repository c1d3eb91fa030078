"""Claiming runs, holding their leases, and letting them go.

A run is claimable when it is pending or waiting and due (``wake_at`` has passed), or running under a
lease that expired (its worker died). Claims lock the rows they take (PostgreSQL ``FOR UPDATE SKIP
LOCKED``; on SQLite the write transaction itself is exclusive), respect each queue's concurrency limit
across all workers, and take higher priority first, then the longest due.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..flows.records import RunRecord, get_runs
from ..store.database import Conn

__all__ = ["claim_runs", "extend_leases", "held_flags", "live_workers", "lost_runs", "release_runs"]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def claim_runs(
    conn: Conn, *, owner: str, workflows: Sequence[str], limits: dict[str, int], n: int, lease_seconds: float
) -> list[RunRecord]:
    if n <= 0 or not workflows:
        return []
    now = time.time()
    room: dict[str, int] = {}
    if limits:
        for queue in sorted(limits):
            conn.lock_key(f"crewline-queue:{queue}")
        running = dict(
            conn.all(
                f"SELECT queue, COUNT(*) FROM runs WHERE status = 'running' AND lease_until >= ? "
                f"AND queue IN ({_marks(len(limits))}) GROUP BY queue",
                (now, *limits),
            )
        )
        room = {q: limit - int(running.get(q, 0)) for q, limit in limits.items()}
    full = [q for q, r in room.items() if r <= 0]
    where_full = f" AND queue NOT IN ({_marks(len(full))})" if full else ""
    rows = conn.all(
        "SELECT id, queue FROM runs WHERE ((status IN ('pending', 'waiting') AND wake_at <= ?) "
        "OR (status = 'running' AND lease_until < ?)) "
        f"AND workflow IN ({_marks(len(workflows))}){where_full} "
        "ORDER BY priority DESC, wake_at LIMIT ?" + conn.dialect.lock_rows_suffix(),
        (now, now, *workflows, *full, n * 2 if room else n),
    )
    chosen: list[str] = []
    for run_id, queue in rows:
        if queue in room:
            if room[queue] <= 0:
                continue
            room[queue] -= 1
        chosen.append(run_id)
        if len(chosen) == n:
            break
    if not chosen:
        return []
    conn.execute(
        "UPDATE runs SET recoveries = recoveries + (CASE WHEN status = 'running' THEN 1 ELSE 0 END), "
        "status = 'running', lease_owner = ?, lease_until = ?, wake_at = NULL, wait_reason = NULL, "
        f"wait_event = NULL, updated_at = ? WHERE id IN ({_marks(len(chosen))})",
        (owner, now + lease_seconds, now, *chosen),
    )
    return get_runs(conn, chosen)


def extend_leases(conn: Conn, owner: str, lease_seconds: float, run_ids: Sequence[str]) -> set[str]:
    """Push out the leases ``owner`` holds on ``run_ids``; returns those it still holds.

    Only runs a live task is executing: a lease kept alive for a run nobody executes would keep every
    other worker (and a cancel) away from it for good.
    """
    now = time.time()
    conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, owner))
    if not run_ids:
        return set()
    rows = conn.all(
        "UPDATE runs SET lease_until = ? WHERE lease_owner = ? AND status = 'running' "
        f"AND id IN ({_marks(len(run_ids))}) RETURNING id",
        (now + lease_seconds, owner, *run_ids),
    )
    return {r[0] for r in rows}


def lost_runs(conn: Conn, owner: str, run_ids: Sequence[str]) -> set[str]:
    """Of ``run_ids``, those ``owner`` no longer holds because its lease lapsed: another worker took them,
    or they went back to the queue. Not those that ended or parked, which ``owner`` let go of itself."""
    if not run_ids:
        return set()
    rows = conn.all(
        f"SELECT id FROM runs WHERE id IN ({_marks(len(run_ids))}) "
        "AND status IN ('pending', 'running') AND (lease_owner IS NULL OR lease_owner <> ?)",
        (*run_ids, owner),
    )
    return {r[0] for r in rows}


def held_flags(conn: Conn, owner: str) -> tuple[set[str], set[str]]:
    """(runs ``owner`` holds, those of them an operator asked to cancel)."""
    rows = conn.all(
        "SELECT id, cancel_requested FROM runs WHERE lease_owner = ? AND status = 'running'", (owner,)
    )
    return {r[0] for r in rows}, {r[0] for r in rows if r[1]}


def release_runs(conn: Conn, owner: str) -> int:
    """Give back whatever ``owner`` still holds, due now, for another worker to take."""
    now = time.time()
    cur = conn.execute(
        "UPDATE runs SET status = 'pending', lease_owner = NULL, lease_until = NULL, wake_at = ?, updated_at = ? "
        "WHERE lease_owner = ? AND status = 'running'",
        (now, now, owner),
    )
    return int(cur.rowcount)


def live_workers(conn: Conn, lease_seconds: float) -> int:
    """How many workers are running: not stopped, and their heartbeat (every third of a lease) is recent."""
    row = conn.one(
        "SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL AND heartbeat_at > ?",
        (time.time() - 2 * lease_seconds,),
    )
    return int(row[0]) if row else 0
