"""Requests- and tokens-per-minute limits per deployment.

In one process a sliding one-minute window per deployment is enough. When several processes share a
PostgreSQL database the counts live in ``model_rate_windows`` (fixed minute windows), bumped by a single
conditional upsert that only succeeds while the window has room, so processes cannot jointly exceed a
limit. Token counts are taken at admission (estimated input plus ``max_tokens``), the most a call can use.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..store import Conn, Database
from .routing import Deployment

__all__ = ["LocalLimiter", "SharedLimiter"]

_WINDOW = 60.0


class LocalLimiter:
    """Sliding-window RPM/TPM counters for the deployments of this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, deque[tuple[float, int]]] = {}

    def acquire(self, dep: Deployment, tokens: int) -> float:
        """0.0 when the call is admitted (and counted), else seconds until the window has room."""
        if dep.rpm is None and dep.tpm is None:
            return 0.0
        now = self._clock()
        window = self._seen.setdefault(dep.name, deque())
        while window and window[0][0] <= now - _WINDOW:
            window.popleft()
        used = sum(t for _, t in window)
        over_rpm = dep.rpm is not None and len(window) >= dep.rpm
        over_tpm = dep.tpm is not None and window and used + tokens > dep.tpm
        if over_rpm or over_tpm:
            return max(0.001, window[0][0] + _WINDOW - now)
        window.append((now, tokens))
        return 0.0


class SharedLimiter:
    """Minute windows in the database, for limits that hold across processes (PostgreSQL)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def acquire(self, dep: Deployment, tokens: int) -> float:
        if dep.rpm is None and dep.tpm is None:
            return 0.0
        now = self._clock()
        window = int(now // _WINDOW)
        rpm = dep.rpm if dep.rpm is not None else 2**62
        tpm = dep.tpm if dep.tpm is not None else 2**62

        def bump(conn: Conn) -> bool:
            row = conn.one(
                "INSERT INTO model_rate_windows (deployment, win, requests, tokens) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (deployment, win) DO UPDATE SET requests = model_rate_windows.requests + 1, "
                "tokens = model_rate_windows.tokens + excluded.tokens "
                "WHERE model_rate_windows.requests < ? AND model_rate_windows.tokens + excluded.tokens <= ? "
                "RETURNING requests",
                (dep.name, window, tokens, rpm, tpm),
            )
            conn.execute(
                "DELETE FROM model_rate_windows WHERE deployment = ? AND win < ?", (dep.name, window - 1)
            )
            return row is not None

        if await self._db.write(bump):
            return 0.0
        return max(0.001, (window + 1) * _WINDOW - now)
