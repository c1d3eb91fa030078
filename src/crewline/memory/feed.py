"""Following ``memory_changes``, the feed of touched item rows, from one process.

What a process keeps about the memory (the vector matrix, full-text postings and statistics) is brought up to date
before a search by reading the feed past a watermark. On PostgreSQL sequence numbers can commit out of
order, so a gap in the feed is re-read until it fills or has been open long enough to be a rolled-back
transaction. A follower that has not looked for half the feed's retention starts over from the items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..store.database import Conn
from . import versions as v

__all__ = ["CHANGES_KEPT_SECONDS", "FeedCursor"]

_GAP_SECONDS = 30.0
# The change feed is pruned after CHANGES_KEPT_SECONDS (see MemoryStore.purge_expired); a follower that has
# not looked at it for half that long reloads from the items instead of trusting a feed it may have missed.
CHANGES_KEPT_SECONDS = 3600.0
_IDLE_RELOAD_SECONDS = CHANGES_KEPT_SECONDS / 2


class FeedCursor:
    """Where one follower is in the feed; not thread-safe (its owner holds a lock)."""

    def __init__(self) -> None:
        self._loaded = False
        self._synced_at = 0.0
        self._watermark = 0  # every change with seq <= this has been applied
        self._pending: dict[int, float] = {}  # seqs above the watermark not yet seen -> first noticed

    def changed(self, conn: Conn) -> set[int] | None:
        """The rids changed since the last call (empty: none), or ``None``: start over from the items,
        which the caller must then read (the watermark is already set to the feed's end)."""
        now = time.monotonic()
        if not self._loaded or now - self._synced_at > _IDLE_RELOAD_SECONDS:
            self._watermark = v.last_change(conn)
            self._pending.clear()
            self._loaded = True
            self._synced_at = now
            return None
        self._synced_at = now
        rows = v.changes_since(conn, self._watermark)
        if not rows:
            return set()
        self._advance([int(seq) for seq, _ in rows])
        return {int(rid) for _, rid in rows}

    def reset(self) -> None:
        self._loaded = False
        self._pending.clear()

    def _advance(self, seqs: Sequence[int]) -> None:
        now = time.monotonic()
        seen = set(seqs)
        top = max(seqs)
        for s in range(self._watermark + 1, top + 1):
            if s not in seen and s not in self._pending:
                self._pending[s] = now
        for s in seen:
            self._pending.pop(s, None)
        for s, first in list(self._pending.items()):
            if now - first > _GAP_SECONDS:  # a sequence value burnt by a rolled-back transaction
                del self._pending[s]
        self._watermark = (min(self._pending) - 1) if self._pending else max(self._watermark, top)
