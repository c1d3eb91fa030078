"""A whole transaction sent to PostgreSQL as one libpq pipeline, from the event loop.

psycopg's own pipeline (``async with conn.pipeline()``) waits on the socket several times a transaction
and builds a cursor per statement: for a step's checkpoint (begin, the lease assertion, the step's
record, commit) that was 450 µs against 390 sent here, a round trip and a few microseconds of Python
(measured in one loop on the 2-core machine; `bench/README.md`, "Where a lone run's step goes").

Only what a direct write needs: statements whose results nobody reads, ``%s`` placeholders, parameters
adapted by psycopg's own :class:`~psycopg.adapt.Transformer` (the same types and formats its cursors
send). The first error is raised once the pipeline's sync arrives; the transaction is then left failed
for the caller to roll back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

__all__ = ["PipelineError", "send_pipeline"]


class PipelineError(Exception):
    """A statement of the pipeline failed (or could not be sent this way)."""


# Each connection's statements prepared on the server, by (query, parameter types): planning a statement
# anew every time (the runs table's indexes make the lease assertion's plan dear) cost more than the
# pipeline saves. Bounded: a connection sending ever-new statements stops preparing them.
_PREPARED: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, tuple[int, ...]], bytes]] = (
    weakref.WeakKeyDictionary()
)
_MAX_PREPARED = 256
_names = itertools.count(1)


async def send_pipeline(
    conn: Any, statements: Sequence[tuple[str, Sequence[Any] | None]], *, prepare: bool = True
) -> None:
    """Send ``statements`` (SQL with ``%s`` placeholders, parameters) on the asynchronous psycopg
    connection ``conn`` as one pipeline, and wait until the server has answered them all; without
    ``prepare`` (behind a pooler in transaction mode) nothing is prepared on the server."""
    pg = conn.pgconn
    tx = Transformer.from_context(conn)
    commands = [_command(tx, sql, params) for sql, params in statements]
    prepared = _PREPARED.setdefault(conn, {})
    preparing: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
    room = _MAX_PREPARED if prepare else 0
    loop = asyncio.get_running_loop()
    pg.enter_pipeline_mode()
    try:
        for query, values, types, formats in commands:
            key = (query, tuple(types or ()))
            name = prepared.get(key) or preparing.get(key)
            if name is None and len(prepared) + len(preparing) < room:
                name = preparing[key] = f"crewline_{next(_names)}".encode()
                pg.send_prepare(name, query, param_types=types)
            if name is None:
                pg.send_query_params(query, values, param_types=types, param_formats=formats)
            else:
                pg.send_query_prepared(name, values, param_formats=formats)
        pg.pipeline_sync()
        while pg.flush():
            await _ready(loop, pg.socket, write=True)
        error = await _results(loop, pg)
    except BaseException:
        # Cut off midway (an error, a cancellation): leaving the mode fails while answers are unread,
        # and must not replace what is raised; the caller closes or rolls back the connection.
        with contextlib.suppress(Exception):
            pg.exit_pipeline_mode()
        raise
    pg.exit_pipeline_mode()
    if error is not None:
        raise PipelineError(error)
    prepared.update(preparing)  # only once all were sent without error: else some may not exist


def _command(tx: Any, sql: str, params: Sequence[Any] | None) -> tuple[bytes, Any, Any, Any]:
    """The statement with ``$n`` placeholders and its parameters as libpq takes them."""
    parts = sql.split("%s")
    if any("%" in part for part in parts):  # %% or %(name)s: not a statement this sends
        raise PipelineError("only %s placeholders are sent in a pipeline")
    n = len(parts) - 1
    if n != len(params or ()):
        raise PipelineError(f"{n} placeholders for {len(params or ())} parameters")
    if not n:
        return sql.encode(), None, None, None
    query = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
    values = tx.dump_sequence(params or (), [PyFormat.AUTO] * n)
    return query.encode(), values, tx.types, tx.formats


async def _results(loop: asyncio.AbstractEventLoop, pg: Any) -> str | None:
    """Read every result up to the pipeline's sync; the first error's message, if any."""
    error: str | None = None
    while True:
        pg.consume_input()
        while pg.is_busy():
            await _ready(loop, pg.socket, write=False)
            pg.consume_input()
        result = pg.get_result()
        if result is None:  # the end of one statement's results
            continue
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            return error
        if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = (result.error_message or b"").decode("utf-8", "replace").strip() or "statement failed"


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Wait until the socket ``fd`` can be written (or read)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
