"""``ctx.wait_for``: wait durably for an event sent to the run; events sent earlier are consumed in order."""

from __future__ import annotations

import time
from typing import Any

from ..config import parse_duration
from ..errors import WaitTimeout
from ..store.database import Conn
from ..store.payloads import dump, load_json
from .engine import Suspend
from .event_store import take_event
from .journal import Journal, Outcome
from .run_store import lock_run
from .states import Park

__all__ = ["wait_for_event"]


async def wait_for_event(journal: Journal, event: str, timeout: float | str | None) -> Any:
    entry = await journal.begin(event, "event")
    rec = entry.record
    timed_out = f"run {journal.run_id} step {entry.n}: no {event!r} event before the timeout"
    if rec is not None and rec.status == "done":
        return rec.output["payload"]
    if rec is not None and rec.status == "failed":
        raise WaitTimeout(timed_out)
    clock = journal.engine.clock
    if rec is not None:
        deadline = rec.output.get("deadline")
    else:
        deadline = None if timeout is None else clock() + parse_duration(timeout)

    def attempt(conn: Conn) -> tuple[str, Any]:
        lock_run(conn, journal.run_id)
        found, payload = take_event(conn, journal.run_id, event, entry.n)
        if found:
            value = load_json(payload or b"null")
            journal.write(conn, entry, Outcome("done", dump({"payload": value})))
            return "done", value
        if deadline is not None and clock() >= deadline:
            error = {"type": "WaitTimeout", "message": f"no {event!r} event before the timeout"}
            journal.write(conn, entry, Outcome("failed", None, error))
            return "timeout", None
        journal.write(conn, entry, Outcome("waiting", dump({"deadline": deadline})))
        wake = None if deadline is None else time.time() + max(0.0, deadline - clock())
        journal.park(conn, Park.on_event(event, wake))
        return "parked", None

    outcome, payload = await journal.transact(attempt)
    if outcome == "done":
        return payload
    if outcome == "timeout":
        raise WaitTimeout(timed_out)
    raise Suspend(f"waiting for event {event!r}")
