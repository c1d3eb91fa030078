"""A write committed from the event loop itself, when the writer thread has nothing else to do.

Group commit (:meth:`~crewline.store.database.Database.write`) hands each write to one writer thread and
its outcome back to the event loop: two thread wake-ups that a lone run pays on every step, about as much
as a fast disk's commit. When the writer is idle and the database is quiet (the last commit carried one
write), the write is committed from the loop instead, at the same durability, as one pipelined round
trip on an asynchronous connection (PostgreSQL; SQLite keeps the writer thread, see :func:`direct_writer`). Anything unusual (no connection yet, an outage, a failed assertion, a write that reads what
it sends) makes a direct writer answer :data:`HAND_OVER`, and the write takes the ordinary path from the
start, which tells a failed guard from other errors; as there, a write may then run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .dialects import Dialect

__all__ = ["HAND_OVER", "AsyncDirect", "DirectWriter", "Write", "direct_writer"]

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


class DirectWriter:
    """Commits one write from the event loop, or answers :data:`HAND_OVER`."""

    async def commit(self, write: Write) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def direct_writer(dialect: Dialect, make_conn: MakeConn) -> DirectWriter | None:
    """The direct writer for ``dialect``, where it has an asynchronous driver (PostgreSQL).

    SQLite has none: a commit made synchronously on the loop was measured slower than the writer thread
    on a loaded machine (a busy thread blocked in fsync waits longer for a core than an idle one)."""
    if dialect.pipelines:
        return AsyncDirect(dialect, make_conn)
    return None


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
    guard's assertion, the statements and commit go in one pipelined round trip, awaited on the loop."""

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
            async with aconn.pipeline():
                for sql, params in statements:
                    await aconn.execute(sql, params)
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
