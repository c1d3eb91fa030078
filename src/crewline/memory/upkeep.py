"""Memory upkeep on a schedule: the workers purge expired items (search already skips them) and prune
the vector index's change feed, once an interval across every process sharing the database.

``memory_upkeep``, whose SQL this module alone issues, holds when the purge is next due. A worker takes
the purge in the transaction that moves that time on, under a lock, so with many workers on one
PostgreSQL one of them purges and the others find it done. ``crewline memory purge`` purges now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..config import parse_duration
from ..errors import ConfigError, DatabaseUnavailable
from ..store.database import Conn, Database
from . import versions as v
from .feed import CHANGES_KEPT_SECONDS

__all__ = ["PurgeTurn", "keep_purged", "purge_every", "purge_expired_in", "purge_if_due"]

log = logging.getLogger("crewline.memory")

PURGE_EVERY = "1h"
# After a failed turn (the database unreachable), try again this soon rather than a whole interval later.
_RETRY_SECONDS = 30.0


def purge_every(section: Mapping[str, Any] | None) -> float | None:
    """``[memory] purge_every`` in seconds (default ``"1h"``); ``None`` for ``"off"``."""
    value = (section or {}).get("purge_every", PURGE_EVERY)
    if value == "off":
        return None
    seconds = 0.0
    if isinstance(value, str | int | float):
        try:
            seconds = parse_duration(value)
        except ConfigError as e:
            raise ConfigError(f'[memory] purge_every: {e} (or "off" to never purge on a schedule)') from None
    if seconds < 1:
        raise ConfigError(
            f'[memory] purge_every must be a duration of at least 1s like "1h", or "off"; got {value!r}'
        )
    return seconds


def purge_expired_in(conn: Conn, at: float) -> int:
    """Delete the items whose TTL passed by ``at`` and the change feed older than the index needs;
    returns how many items expired."""
    ids = v.expired_ids(conn, at)
    for item_id in ids:
        v.delete_item(conn, item_id, author="ttl", op="expire", at=at)
    v.prune_changes(conn, time.time() - CHANGES_KEPT_SECONDS)
    return len(ids)


@dataclass(frozen=True)
class PurgeTurn:
    purged: int | None  # None: not due, another process purged this interval
    next_at: float


def purge_if_due(conn: Conn, *, now: float, every: float) -> PurgeTurn:
    """Purge when the schedule says so, and move the schedule on in the same transaction.
    (Only touches the database: a group-commit write may run it twice.)"""
    conn.lock_key("crewline-memory-purge")
    conn.execute(
        "INSERT INTO memory_upkeep (task, next_at) VALUES ('purge', ?) ON CONFLICT (task) DO NOTHING", (now,)
    )
    due = float(conn.scalar("SELECT next_at FROM memory_upkeep WHERE task = 'purge'") or now)
    if due > now:
        return PurgeTurn(None, due)
    purged = purge_expired_in(conn, now)
    conn.execute(
        "UPDATE memory_upkeep SET next_at = ?, last_at = ?, last_count = ? WHERE task = 'purge'",
        (now + every, now, purged),
    )
    return PurgeTurn(purged, now + every)


async def keep_purged(
    db: Database, stopping: asyncio.Event, every: float, clock: Callable[[], float] = time.time
) -> None:
    """A worker chore: purge expired memory when due, until ``stopping`` is set."""
    while not stopping.is_set():
        wait = _RETRY_SECONDS
        try:
            turn = await db.write(partial(purge_if_due, now=clock(), every=every))
            if turn.purged:
                log.info("memory: purged %d expired item(s)", turn.purged)
            wait = turn.next_at - clock()
        except DatabaseUnavailable as e:
            log.warning("memory purge: cannot reach the database: %s", e)
        except Exception:
            log.exception("memory purge failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), min(max(wait, 0.05), every))
