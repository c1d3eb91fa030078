"""Claiming runs, holding their leases, and letting them go.

A run is claimable when it is pending or waiting and due (``wake_at`` has passed), or running under a
lease that expired (its worker died). Claims lock the rows they take (the dialect's claim lock: other
claimers skip them), respect each queue's concurrency limit across all workers, and take higher priority
first, then the longest due. The runs' SQL is :mod:`crewline.flows.run_store`'; this module owns the
``workers`` table (registration and heartbeats).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..flows import run_store
from ..flows.run_records import RunRecord
from ..flows.switches import paused_names
from ..store.database import Conn

__all__ = [
    "claim_runs",
    "extend_leases",
    "held_flags",
    "live_workers",
    "lost_runs",
    "register_worker",
    "release_runs",
    "stop_worker",
]


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
        running = run_store.running_per_queue(conn, list(limits), now)
        room = {q: limit - running.get(q, 0) for q, limit in limits.items()}
    paused_workflows, paused_queues = paused_names(conn)
    workflows = [w for w in workflows if w not in paused_workflows]
    if not workflows:
        return []
    full = [q for q, r in room.items() if r <= 0] + paused_queues
    rows = run_store.claimable(conn, workflows, full, now, n * 2 if room else n)
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
    run_store.take_runs(conn, chosen, owner, now + lease_seconds, now)
    return run_store.get_runs(conn, chosen)


def extend_leases(conn: Conn, owner: str, lease_seconds: float, run_ids: Sequence[str]) -> set[str]:
    """Beat ``owner``'s heart and push out the leases it holds on ``run_ids``; returns those it still holds.

    Only runs a live task is executing: a lease kept alive for a run nobody executes would keep every
    other worker (and a cancel) away from it for good.
    """
    now = time.time()
    conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, owner))
    return run_store.extend_leases(conn, owner, now + lease_seconds, run_ids)


def lost_runs(conn: Conn, owner: str, run_ids: Sequence[str]) -> set[str]:
    """Of ``run_ids``, those ``owner`` no longer holds because its lease lapsed: another worker took them,
    or they went back to the queue. Not those that ended or parked, which ``owner`` let go of itself."""
    return run_store.lost_runs(conn, owner, run_ids)


def held_flags(conn: Conn, owner: str) -> run_store.Held:
    """The runs ``owner`` holds, and those of them an operator asked to cancel or to pause."""
    return run_store.held_flags(conn, owner)


def release_runs(conn: Conn, owner: str) -> int:
    """Give back whatever ``owner`` still holds, due now, for another worker to take."""
    return run_store.release_runs(conn, owner, time.time())


def register_worker(conn: Conn, worker_id: str, hostname: str, pid: int, concurrency: int) -> None:
    now = time.time()
    conn.execute(
        "INSERT INTO workers (id, hostname, pid, concurrency, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
        (worker_id, hostname, pid, concurrency, now, now),
    )


def stop_worker(conn: Conn, worker_id: str) -> None:
    conn.execute("UPDATE workers SET stopped_at = ? WHERE id = ?", (time.time(), worker_id))


def live_workers(conn: Conn, lease_seconds: float) -> int:
    """How many workers are running: not stopped, and their heartbeat (every third of a lease) is recent."""
    row = conn.one(
        "SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL AND heartbeat_at > ?",
        (time.time() - 2 * lease_seconds,),
    )
    return int(row[0]) if row else 0
