"""Events sent to runs, as rows: what ``app.send_event`` stores and ``ctx.wait_for_event`` consumes.

This module alone issues SQL on ``events``. An event is kept until its run is purged: a step consumes
it (recording which), and a rerun from before that step hands it back to be received again.
"""

from __future__ import annotations

import time

from ..errors import InvalidRunState
from ..store.database import Conn
from ..store.payloads import dump, load, store_payload
from .run_store import lock_run, make_due
from .states import FINISHED

__all__ = ["return_events_from", "send_event", "take_event"]


def send_event(conn: Conn, run_id: str, name: str, payload_json: bytes, blob_threshold: int) -> int:
    """Store event ``name`` for the run (the run's row locked); a run waiting for it is due at once."""
    status, _, waiting_for = lock_run(conn, run_id)
    if status in FINISHED:
        raise InvalidRunState(f"run {run_id} is {status}; it can no longer receive events")
    inline, blob = store_payload(conn, payload_json, blob_threshold)
    now = time.time()
    event_id = conn.scalar(
        "INSERT INTO events (run_id, name, payload, payload_blob, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
        (run_id, name, inline, blob, now),
    )
    if status in ("waiting", "paused") and waiting_for == name:
        make_due(conn, run_id, now)
    return int(event_id)


def take_event(conn: Conn, run_id: str, name: str, step_no: int) -> tuple[bool, bytes | None]:
    """Consume the oldest unconsumed event ``name`` for the run; returns (found, payload JSON)."""
    row = conn.one(
        "SELECT id, payload, payload_blob FROM events WHERE run_id = ? AND name = ? AND consumed_step IS NULL "
        "ORDER BY id LIMIT 1",
        (run_id, name),
    )
    if row is None:
        return False, None
    conn.execute("UPDATE events SET consumed_step = ? WHERE id = ?", (step_no, row[0]))
    return True, dump(load(conn, row[1], row[2]))


def return_events_from(conn: Conn, run_id: str, from_step: int) -> None:
    """Hand back the events the steps from ``from_step`` on consumed, so that those steps, executed again
    (a rerun), wait for and receive them again."""
    conn.execute(
        "UPDATE events SET consumed_step = NULL WHERE run_id = ? AND consumed_step >= ?", (run_id, from_step)
    )
