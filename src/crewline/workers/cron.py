"""Cron schedules: each tick of a scheduled workflow starts exactly one run, whatever the number of workers.

Each schedule keeps its last fired tick in ``schedules``; a worker that sees a newer tick due advances it
and starts the run in the same transaction (the row lock, or SQLite's exclusive writer, lets exactly one
worker win), and the run id ``cron:<workflow>:<tick>`` makes a second start a no-op anyway. A schedule seen
for the first time starts from now (no back-fill); after downtime only the latest missed tick fires.
Times are UTC. This module alone issues SQL on ``schedules``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from croniter import croniter

from ..flows.definitions import Workflow
from ..flows.run_store import insert_run
from ..flows.switches import disabled_workflows
from ..store.database import Conn
from ..store.dialects import FOR_UPDATE
from ..store.payloads import dump

__all__ = ["LiveTriggers", "fire_due", "latest_tick", "next_tick"]


def latest_tick(expr: str, now: float) -> float:
    return float(croniter(expr, datetime.fromtimestamp(now, UTC)).get_prev(float))


def next_tick(expr: str, now: float) -> float:
    return float(croniter(expr, datetime.fromtimestamp(now, UTC)).get_next(float))


class LiveTriggers(Protocol):
    """What a live trigger asks the engine: which workflow serves it (a promoted shadow candidate takes
    over), and the shadow run to start beside the live one."""

    def serving(self, conn: Conn, wf: Workflow) -> Workflow: ...

    def start_shadow(self, conn: Conn, workflow: str, run_id: str, input_json: bytes) -> str | None: ...


def fire_due(
    conn: Conn,
    workflows: list[Workflow],
    blob_threshold: int,
    now: float | None = None,
    triggers: LiveTriggers | None = None,
) -> list[str]:
    """Start a run for every schedule whose latest tick has not fired yet; returns the run ids started."""
    now = time.time() if now is None else now
    started: list[str] = []
    lock = conn.dialect.lock_rows_suffix(FOR_UPDATE)
    disabled = disabled_workflows(conn)
    for wf in workflows:
        assert wf.schedule is not None
        if wf.name in disabled:
            continue  # its ticks are not made up for once it is enabled: the schedule moves on
        tick = latest_tick(wf.schedule, now)
        row = conn.one(f"SELECT cron, last_tick FROM schedules WHERE workflow = ?{lock}", (wf.name,))
        if row is None or row[0] != wf.schedule:
            conn.execute(
                "INSERT INTO schedules (workflow, cron, last_tick) VALUES (?, ?, ?) ON CONFLICT (workflow) "
                "DO UPDATE SET cron = excluded.cron, last_tick = excluded.last_tick",
                (wf.name, wf.schedule, tick),
            )
            continue
        if tick <= row[1]:
            continue
        conn.execute("UPDATE schedules SET last_tick = ? WHERE workflow = ?", (tick, wf.name))
        stamp = datetime.fromtimestamp(tick, UTC).strftime("%Y%m%dT%H%M%SZ")
        live = wf if triggers is None else triggers.serving(conn, wf)
        run_id, created = insert_run(
            conn,
            run_id=f"cron:{wf.name}:{stamp}",
            workflow=live.name,
            version=live.version,
            queue=live.queue,
            priority=live.priority,
            input_json=dump(None),
            blob_threshold=blob_threshold,
        )
        if created:
            started.append(run_id)
            if triggers is not None:
                triggers.start_shadow(conn, live.name, run_id, dump(None))
    return started
