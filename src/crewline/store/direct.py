"""A write committed from the event loop itself, when the writer thread has nothing else to do.

Group commit (:meth:`~crewline.store.database.Database.write`) hands each write to one writer thread and
its outcome back to the event loop: two thread wake-ups that a lone run pays on every step, about as much
as a fast disk's commit. When the writer is idle and the database is quiet (the last commit carried one
write), the write is committed from the loop instead, at the same durability: on SQLite synchronously,
with what could hold the loop up kept off it (see :class:`SyncDirect`); on PostgreSQL as one pipelined
round trip on an asynchronous connection. Anything unusual (no connection yet, an outage, a failed
assertion, a write that reads what it sends) makes a direct writer answer :data:`HAND_OVER`, and the
write takes the ordinary path from the start, which tells a failed guard from other errors; as there, a
write may then run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .dialects import Dialect

__all__ = ["HAND_OVER", "AsyncDirect", "DirectWriter", "SyncDirect", "Write", "direct_writer"]

log = logging.getLogger("crewline.store")

# What a direct writer answers when the write must go to the writer thread instead.
HAND_OVER: Any = object()


class Write:
    """One write as :meth:`Database.write` takes it: ``fn`` under an optional guard."""

    __slots__ = ("fn", "guard")

    def __init__(self, fn: Callable[[Any], Any], guard: Any) -> None:
        self.fn = fn
        self.guard = guard


# ``make_conn(raw, pipelined)`` wraps a driver connection (or a recorder) in a Conn.
MakeConn = Callable[[Any, bool], Any]
# Runs writes in the open transaction of a Conn: (True, result) or (False, error) for each.
RunBatch = Callable[[Any, Sequence[Write]], list[tuple[bool, Any]]]


class DirectWriter:
    """Commits one write from the event loop, or answers :data:`HAND_OVER`."""

    # Whether the loop waits while it commits (a synchronous driver): then only quick writes come here.
    blocks = False

    async def commit(self, write: Write) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def direct_writer(dialect: Dialect, make_conn: MakeConn, run_batch: RunBatch) -> DirectWriter:
    """The direct writer for ``dialect``: asynchronous where the dialect pipelines (a server a network
    away), synchronous for a local file."""
    if dialect.pipelines:
        return AsyncDirect(dialect, make_conn)
    return SyncDirect(dialect, make_conn, run_batch)


class SyncDirect(DirectWriter):
    """A local commit (SQLite) made on the loop: a fast disk's commit takes less than the two thread
    hand-offs it saves (a lone run's step: 1.55-1.6x a bare commit instead of 2.1-2.4x).

    While it commits, the loop runs nothing else, so what could hold it up long is kept off it: only
    writes their caller says are quick come here (``Database.write(quick=True)``), the loop's
    connection never waits for another connection's write lock (the write goes to the writer
    thread, which waits), and when a quarter of its recent commits took longer than :data:`_SLOW_COMMIT`
    (a slow or busy disk), the writes of the next :data:`_SLOW_PAUSE` seconds go to the writer thread
    before it tries again. It checkpoints the WAL as SQLite does by default, every thousand pages (about
    1 ms on the loop every few hundred steps here): a checkpoint asked of another thread was measured
    slower, as it competes with the commits for the disk, and a passive one never caught up.
    """

    blocks = True

    def __init__(self, dialect: Dialect, make_conn: MakeConn, run_batch: RunBatch) -> None:
        self._dialect = dialect
        self._make_conn = make_conn
        self._run_batch = run_batch
        self._raw: Any = None
        self._recent = 0  # commits in the current window of _WINDOW
        self._slow = 0  # of which slow
        self._paused_until = 0.0
        # The guard key and data version of this connection's last commit, when its write kept its guard.
        self._kept: tuple[Any, int] | None = None

    async def commit(self, write: Write) -> Any:
        started = time.monotonic()
        if started < self._paused_until:
            return HAND_OVER
        raw = self._connection()
        if raw is None:
            return HAND_OVER
        try:
            self._dialect.begin_write(raw)  # fails at once while another connection holds the lock
        except Exception as e:
            if self._dialect.is_unavailable(e):
                self.close()
            return HAND_OVER  # nothing was begun: nothing to roll back
        # A guard this connection's previous transaction passed and left alone (``Guard.keeps``) still
        # passes if no other connection has committed since: the dialect's data version, read under
        # the write lock, says so. A lone run's steps skip a query each this way.
        kept, self._kept = self._kept, None
        guard = write.guard
        try:
            version = self._dialect.data_version(raw) if guard is not None and guard.keeps else None
            known = version is not None and kept == (guard.key, version)
            conn = self._make_conn(raw, False)
            if known:
                ok, value = True, write.fn(conn)
            else:
                [(ok, value)] = self._run_batch(conn, [write])
            conn.flush()
        except Exception as e:
            self._failed(raw, e)
            if self._dialect.is_unavailable(e):
                return HAND_OVER
            raise  # the write's own error, as the writer thread would hand it back
        try:
            raw.execute("COMMIT")
        except Exception as e:
            self._failed(raw, e)
            return HAND_OVER
        self._committed(time.monotonic() - started)
        if not ok:
            raise value  # a failed guard
        if version is not None:
            self._kept = (guard.key, version)
        return value

    def _committed(self, seconds: float) -> None:
        self._recent += 1
        self._slow += seconds > _SLOW_COMMIT
        if self._recent < _WINDOW:
            return
        if self._slow * 4 >= _WINDOW:
            self._paused_until = time.monotonic() + _SLOW_PAUSE
            log.info(
                "commits are slow on this disk (%d of the last %d over %.0f ms): the next %.0f s of writes "
                "go through the writer thread, leaving the event loop free",
                self._slow,
                _WINDOW,
                _SLOW_COMMIT * 1000,
                _SLOW_PAUSE,
            )
        self._recent = self._slow = 0

    def _connection(self) -> Any:
        if self._raw is None:
            try:
                self._raw = self._dialect.connect_direct()
            except Exception:
                return None
        return self._raw

    def _failed(self, raw: Any, e: Exception) -> None:
        """Roll back; a connection that cannot, or that lost its database, is closed (and opened anew)."""
        try:
            raw.execute("ROLLBACK")
        except Exception:
            self.close()
            return
        if self._dialect.is_unavailable(e):
            self.close()

    def close(self) -> None:
        self._kept = None  # a new connection counts its data versions afresh
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()


# A commit on the loop slower than this counts as slow; a quarter of a window of commits slow sends the
# writes of the pause to the writer thread. A fast disk commits in a fraction of a millisecond.
_SLOW_COMMIT = 0.002
_WINDOW = 32
_SLOW_PAUSE = 10.0


class _NeedsAnswer(Exception):
    """A write read the answer of a statement: it cannot be sent without waiting for it."""


class _NoAnswer:
    """What a recorded statement returns: reading from it stops the recording."""

    def __getattr__(self, name: str) -> Any:
        raise _NeedsAnswer(name)

    def __iter__(self) -> Iterator[Any]:
        raise _NeedsAnswer("iter")


class _Recorder:
    """Stands in for a driver connection: keeps the statements a write sends, in order."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> _NoAnswer:
        self.statements.append((sql, params))
        return _NoAnswer()

    def cursor(self) -> Any:
        raise _NeedsAnswer("cursor")


class AsyncDirect(DirectWriter):
    """PostgreSQL: the write is recorded without a connection (its statements only), then begin, the
    guard's assertion, the statements and commit go in one pipelined round trip, awaited on the loop
    (``Dialect.send_pipeline``: prepared statements in one libpq pipeline, ``store/pg_pipeline.py``)."""

    def __init__(self, dialect: Dialect, make_conn: MakeConn) -> None:
        self._dialect = dialect
        self._make_conn = make_conn
        self._aconn: Any = None
        self._connecting: asyncio.Task[None] | None = None

    async def commit(self, write: Write) -> Any:
        aconn = self._aconn
        if aconn is None or aconn.closed:
            self._connect_soon()
            return HAND_OVER
        recorded = _record(self._dialect, self._make_conn, write)
        if recorded is None:
            return HAND_OVER
        statements, value = recorded
        try:
            await self._dialect.send_pipeline(aconn, statements)
        except Exception:
            await self._roll_back(aconn)
            return HAND_OVER
        except BaseException:
            self.close()  # cancelled mid-protocol: the connection's state is unknown
            raise
        return value

    def _connect_soon(self) -> None:
        """Open the connection in the background: this write (and any until it is open) takes the
        writer thread, so an unreachable server never holds a write longer than the ordinary path."""
        if self._connecting is not None and not self._connecting.done():
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            self._aconn = await self._dialect.connect_async()
        except Exception as e:
            log.debug("no direct connection to the database yet: %s", type(e).__name__)

    async def _roll_back(self, aconn: Any) -> None:
        try:
            await aconn.execute("ROLLBACK")
        except Exception:
            self.close()

    def close(self) -> None:
        aconn, self._aconn = self._aconn, None
        if aconn is not None:
            with contextlib.suppress(Exception):
                aconn.pgconn.finish()  # synchronous: the loop that opened it may be gone


def _record(dialect: Dialect, make_conn: MakeConn, write: Write) -> tuple[list[tuple[str, Any]], Any] | None:
    """The statements of the whole transaction (begin, the guard's assertion, the write, commit) and the
    write's result; None when it cannot be sent blind (it reads an answer, its guard cannot assert, or it
    fails: the writer thread then runs it for real)."""
    recorder = _Recorder()
    conn = make_conn(recorder, True)
    try:
        dialect.begin_write(recorder)
        if write.guard is not None:
            if write.guard.assertion is None:
                return None
            write.guard.assertion(conn, [write.guard.key])
        value = write.fn(conn)
        conn.flush()
    except Exception:
        return None
    if isinstance(value, _NoAnswer):
        return None
    recorder.execute("COMMIT")
    return recorder.statements, value
