"""Requests- and tokens-per-minute limits per deployment.

In one process a sliding one-minute window per deployment is enough. When several processes share a
PostgreSQL database the counts live in ``model_rate_windows`` (fixed minute windows), bumped by a single
conditional upsert that only succeeds while the window has room, so processes cannot jointly exceed a
limit. Token counts are taken at admission (estimated input plus ``max_tokens``), the most a call can use.
This module alone issues SQL on ``model_rate_windows``.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable

from ..store import Conn, Database
from .routing import Deployment

__all__ = ["LocalLimiter", "SharedLimiter"]

_WINDOW = 60.0


class _Window:
    __slots__ = ("calls", "tokens")

    def __init__(self) -> None:
        self.calls: deque[tuple[float, int]] = deque()
        self.tokens = 0  # running sum of the tokens in ``calls``, so admission is O(1)


class LocalLimiter:
    """Sliding-window RPM/TPM counters for the deployments of this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def acquire(self, dep: Deployment, tokens: int) -> float:
        """0.0 when the call is admitted (and counted), else seconds until the window has room."""
        if dep.rpm is None and dep.tpm is None:
            return 0.0
        now = self._clock()
        w = self._windows.get(dep.name)
        if w is None:
            w = self._windows[dep.name] = _Window()
        calls = w.calls
        while calls and calls[0][0] <= now - _WINDOW:
            w.tokens -= calls.popleft()[1]
        over_rpm = dep.rpm is not None and len(calls) >= dep.rpm
        over_tpm = dep.tpm is not None and bool(calls) and w.tokens + tokens > dep.tpm
        if over_rpm or over_tpm:
            return max(0.001, calls[0][0] + _WINDOW - now)
        calls.append((now, tokens))
        w.tokens += tokens
        return 0.0


class SharedLimiter:
    """Minute windows in the database, for limits that hold across processes (PostgreSQL).

    A process does not go to the database for every call: it takes a *lease* of a slice of the window
    (``1/lease_parts`` of the RPM and TPM) in one conditional upsert and spends it locally, falling back
    to leasing exactly what one call needs when the window is nearly full. What a lease leaves unspent at
    the end of its minute is lost, so the limit is never exceeded, at worst under-used by a slice per process.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time, lease_parts: int = 20) -> None:
        self._db = db
        self._clock = clock
        self._parts = lease_parts
        self._leases: dict[str, tuple[int, int, int]] = {}  # deployment -> (window, requests, tokens) left

    async def acquire(self, dep: Deployment, tokens: int) -> float:
        """0.0 when the call is admitted (and counted), else seconds until the next window."""
        if dep.rpm is None and dep.tpm is None:
            return 0.0
        now = self._clock()
        window = int(now // _WINDOW)
        if self._spend(dep.name, window, tokens):
            return 0.0
        rpm = dep.rpm if dep.rpm is not None else 2**62
        tpm = dep.tpm if dep.tpm is not None else 2**62
        # With no TPM limit a lease's tokens are unbounded (2**40 leaves the BIGINT sum far from overflow).
        lease_tokens = max(tokens, tpm // self._parts) if dep.tpm is not None else 2**40
        big = (max(1, rpm // self._parts), lease_tokens)
        for want in (big, (1, tokens)) if big != (1, tokens) else (big,):
            if await self._db.write(
                functools.partial(_lease, name=dep.name, window=window, want=want, rpm=rpm, tpm=tpm)
            ):
                self._leases[dep.name] = (window, *want)
                self._spend(dep.name, window, tokens)
                return 0.0
        return max(0.001, (window + 1) * _WINDOW - now)

    def _spend(self, name: str, window: int, tokens: int) -> bool:
        lease = self._leases.get(name)
        if lease is None or lease[0] != window or lease[1] < 1 or lease[2] < tokens:
            return False
        self._leases[name] = (window, lease[1] - 1, lease[2] - tokens)
        return True


def _lease(conn: Conn, *, name: str, window: int, want: tuple[int, int], rpm: int, tpm: int) -> bool:
    """Add ``want`` (requests, tokens) to the window if it fits under the limits; True when it did."""
    requests, tokens = want
    if requests > rpm or tokens > tpm:
        requests, tokens = min(requests, rpm), min(tokens, tpm)
    row = conn.one(
        "INSERT INTO model_rate_windows (deployment, win, requests, tokens) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (deployment, win) DO UPDATE SET requests = model_rate_windows.requests + excluded.requests, "
        "tokens = model_rate_windows.tokens + excluded.tokens "
        "WHERE model_rate_windows.requests + excluded.requests <= ? "
        "AND model_rate_windows.tokens + excluded.tokens <= ? "
        "RETURNING requests",
        (name, window, requests, tokens, rpm, tpm),
    )
    conn.execute("DELETE FROM model_rate_windows WHERE deployment = ? AND win < ?", (name, window - 1))
    return row is not None
