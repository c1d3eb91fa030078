"""``ctx.sleep``: a durable sleep whose wake-up time is recorded, so a replay sleeps only what is left."""

from __future__ import annotations

import time

from ..config import parse_duration
from ..store.payloads import dump
from .journal import Journal, Outcome
from .states import Park

__all__ = ["INLINE_SLEEP_SECONDS", "durable_sleep"]

# A sleep shorter than this keeps the run (and its worker slot); a longer one parks the run durably.
INLINE_SLEEP_SECONDS = 2.0


async def durable_sleep(journal: Journal, duration: str | float) -> None:
    seconds = parse_duration(duration)
    entry = await journal.begin("sleep", "sleep")
    clock = journal.engine.clock
    if entry.record is None:
        until = clock() + seconds
        await journal.record(entry, Outcome("done", dump({"until": until})))
    else:
        until = float(entry.record.output["until"])
    remaining = until - clock()
    if remaining <= 0:
        return
    if remaining <= INLINE_SLEEP_SECONDS:
        await journal.hold(remaining)
        return
    await journal.suspend(Park.sleep(time.time() + remaining))
