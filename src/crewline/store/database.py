"""The database handle: connections, transactions, and group commit.

A :class:`Database` hides the driver behind :class:`Conn`, which takes portable SQL. Synchronous
transactions (:meth:`Database.transaction`) serve the CLI and tests. The engine's hot path uses
:meth:`Database.write`: every write submitted while the previous commit is being fsync'd is carried by the
next single transaction, so fifty concurrent runs checkpointing a step cost one commit, not fifty, at the
same durability. Writes passed to :meth:`write` must only touch the database (a batch that fails is rolled
back and its writes are retried one by one).

Where the dialect pipelines (PostgreSQL), a batch whose writes all carry a guard that can assert itself is
sent as one round trip — begin, the guards' assertions, the writes, commit — instead of four (begin, read
the guards, write, commit): one run checkpointing a step then costs about one commit. A failed assertion
aborts the transaction, and the batch takes the ordinary path, which tells a failed guard from an error.

A write made while the writer thread is idle and the database quiet skips the thread altogether: it is
committed from the event loop (``store/direct.py``), which saves a lone run the two thread hand-offs per
step; as soon as writes overlap, they queue for the writer thread and share its commits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import DatabaseUnavailable, GuardFailed, StoreError
from .dialects import Dialect, dialect_for_url
from .direct import HAND_OVER, Write, direct_writer

__all__ = ["Conn", "Database", "Guard", "bounded_waits"]

T = TypeVar("T")
log = logging.getLogger("crewline.store")

# How long a read or write may wait for an unreachable database in the current context; None: the
# database's own ``unavailable_retry_seconds``. A server request sets it short, so that it answers 503
# instead of hanging, while the workers beside it keep waiting the outage out.
_wait_limit: ContextVar[float | None] = ContextVar("crewline_database_wait", default=None)


@contextmanager
def bounded_waits(seconds: float) -> Iterator[None]:
    """Within this block, reads and writes wait at most ``seconds`` for an unreachable database before
    raising :class:`DatabaseUnavailable` (tasks started inside inherit the bound)."""
    token = _wait_limit.set(seconds)
    try:
        yield
    finally:
        _wait_limit.reset(token)


class Conn:
    """A connection inside a transaction (or in autocommit for reads), speaking portable SQL.

    :meth:`defer` queues a write whose result nobody reads; queued writes are sent together (one
    ``executemany`` per run of identical statements, pipelined by psycopg) before the next statement
    and before commit, so fifty checkpoints in one group commit cost one round trip, not fifty.
    """

    __slots__ = ("_deferred", "dialect", "pipelined", "raw")

    def __init__(self, raw: Any, dialect: Dialect, pipelined: bool = False) -> None:
        self.raw = raw
        self.dialect = dialect
        # In a pipeline every statement is sent without waiting already; an ``executemany`` there would
        # wait for its own answers, raising a failed assertion before the pipeline ends.
        self.pipelined = pipelined
        self._deferred: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._deferred:
            self.flush()
        return self.raw.execute(_translate(self.dialect, sql), params)

    def defer(self, sql: str, params: Sequence[Any]) -> None:
        self._deferred.append((sql, params))

    def flush(self) -> None:
        pending, self._deferred = self._deferred, []
        if len(pending) == 1:  # a step's record: one statement
            sql, params = pending[0]
            self.raw.execute(_translate(self.dialect, sql), params)
            return
        i = 0
        while i < len(pending):
            sql = pending[i][0]
            j = i
            while j < len(pending) and pending[j][0] == sql:
                j += 1
            rows = [params for _, params in pending[i:j]]
            if len(rows) == 1 or self.pipelined:
                for row in rows:
                    self.raw.execute(_translate(self.dialect, sql), row)
            else:
                self.raw.cursor().executemany(_translate(self.dialect, sql), rows)
            i = j

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.execute(sql, params).fetchone()
        return tuple(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def lock_key(self, key: str) -> None:
        self.dialect.lock_key(self.raw, key)

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        returning: str = "",
        *,
        unique: str = "",
    ) -> list[int]:
        """Insert ``rows`` in bulk, inside a write transaction; returns the new value of the serial
        column ``returning`` of each. With ``unique`` (a column with a unique index), a row whose value
        there is stored already, or comes earlier in ``rows``, is skipped.

        The keys are taken first and inserted with the rows (where the engine numbers the rows just as
        it said it would, SQLite, it is left to do so), not read back with ``RETURNING``: the driver
        would hand each row back through the interpreter lock, which an ingest's other threads hold
        most of the time. Where the dialect copies (PostgreSQL), the rows are streamed with
        ``COPY``: a multi-row ``INSERT`` there spends more time in the driver's parsing of the long
        statement than the server takes to store the rows. Otherwise they go in multi-row statements of
        a power-of-two number of rows (a handful of distinct texts are ever prepared): SQLite's
        full-text triggers flush the index once per statement, which made row-at-a-time inserts
        several times slower."""
        if not rows:
            return []
        if self._deferred:
            self.flush()
        keys: list[int] = []
        numbered = False  # the engine numbers the rows itself, as new_keys said it would
        if returning:
            keys = self.dialect.new_keys(self.raw, table, returning, len(rows))
            numbered = self.dialect.keys_follow_inserts and not unique
            if not numbered:  # (rebuilding every row to put its key first costs an ingest seconds)
                columns = (returning, *columns)
                rows = [(key, *row) for key, row in zip(keys, rows, strict=True)]
        if self.dialect.copies and not self.pipelined and not unique:  # COPY cannot skip a row
            self.dialect.copy_rows(self.raw, table, columns, rows)
            return keys
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = f"({', '.join('?' * len(columns))})"
        tail = f" ON CONFLICT ({unique}) DO NOTHING" if unique else ""
        most = 1 << max(0, (_MAX_PARAMS // len(columns)).bit_length() - 1)
        i = 0
        while i < len(rows):
            n = min(most, 1 << ((len(rows) - i).bit_length() - 1))
            params = list(itertools.chain.from_iterable(rows[i : i + n]))
            self.execute(head + ", ".join([one] * n) + tail, params)
            i += n
        if numbered and self.scalar("SELECT last_insert_rowid()") != keys[-1]:
            raise RuntimeError(f"{table}: rows were numbered other than {keys[0]}..{keys[-1]}")
        return keys


# Parameters in one statement: under SQLite's limit (32766) and PostgreSQL's (65535), so that a
# statement holds a thousand narrow rows.
_MAX_PARAMS = 30000


_sql_cache: dict[tuple[str, str], str] = {}


def _translate(dialect: Dialect, sql: str) -> str:
    key = (dialect.name, sql)
    out = _sql_cache.get(key)
    if out is None:
        out = dialect.sql(sql)
        if len(_sql_cache) < 4096:
            _sql_cache[key] = out
    return out


class Database:
    """One database, reached by URL; safe to share between threads and one event loop."""

    def __init__(self, url: str, *, unavailable_retry_seconds: float = 60.0) -> None:
        self.url = url
        self.dialect = dialect_for_url(url)
        self.unavailable_retry_seconds = unavailable_retry_seconds
        self._local = threading.local()
        self._all_raw: list[Any] = []
        self._lock = threading.Lock()
        self._readers: ThreadPoolExecutor | None = None
        self._committer: _GroupCommitter | None = None
        self._closed = False
        self._outage = _Outage(self.dialect.safe_url())

    @property
    def name(self) -> str:
        return self.dialect.name

    # -- connections -----------------------------------------------------------------------------------

    def _raw(self) -> Any:
        raw = getattr(self._local, "raw", None)
        if raw is None:
            try:
                raw = self.dialect.connect()
            except StoreError:
                raise
            except Exception as e:
                if self.dialect.is_unavailable(e):
                    self._outage.down(_first_line(e))
                    raise DatabaseUnavailable(
                        f"cannot connect to {self.dialect.safe_url()}: {_first_line(e)}; "
                        "check that the database is running and CREWLINE_DATABASE_URL is right"
                    ) from e
                raise
            self._outage.up()
            self._local.raw = raw
            self._local.used = False
            with self._lock:
                self._all_raw.append(raw)
        return raw

    def _reused(self) -> bool:
        """Whether this thread's connection served an earlier transaction or read (and may have been cut
        off since, by a database restart, without the driver knowing until it is used)."""
        used = bool(getattr(self._local, "used", False))
        self._local.used = True
        return used

    def _drop_raw(self) -> None:
        raw = getattr(self._local, "raw", None)
        self._local.raw = None
        if raw is not None:
            with self._lock:
                if raw in self._all_raw:
                    self._all_raw.remove(raw)
            with contextlib.suppress(Exception):
                raw.close()

    def _convert(self, e: Exception) -> Exception:
        if isinstance(e, DatabaseUnavailable):
            return e
        if self.dialect.is_unavailable(e):
            self._drop_raw()
            return DatabaseUnavailable(f"lost the database {self.dialect.safe_url()}: {_first_line(e)}")
        return e

    def _begin(self) -> Any:
        """This thread's connection in a write transaction; a connection that was cut off since its last
        use is replaced once, as nothing has been sent on it yet."""
        raw = self._raw()
        reused = self._reused()
        try:
            self.dialect.begin_write(raw)
        except Exception as e:
            converted = self._convert(e)
            if not (reused and isinstance(converted, DatabaseUnavailable)):
                raise converted from e
            raw = self._raw()
            self._reused()
            try:
                self.dialect.begin_write(raw)
            except Exception as again:
                raise self._convert(again) from again
        return raw

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """A write transaction on this thread's connection; commits on success, rolls back on error."""
        raw = self._begin()
        conn = Conn(raw, self.dialect)
        try:
            yield conn
            conn.flush()
        except BaseException as e:
            try:
                raw.execute("ROLLBACK")
            except Exception:
                self._drop_raw()
            converted = self._convert(e) if isinstance(e, Exception) else e
            if converted is e:
                raise
            raise converted from e
        try:
            raw.execute("COMMIT")
        except Exception as e:
            with contextlib.suppress(Exception):
                raw.execute("ROLLBACK")
            raise self._convert(e) from e

    @contextmanager
    def reading(self) -> Iterator[Conn]:
        """This thread's connection in autocommit, for reads."""
        raw = self._raw()
        reused = self._reused()
        conn = Conn(raw, self.dialect)
        try:
            yield conn
            conn.flush()  # a deferred write in autocommit still happens
        except Exception as e:
            converted = self._convert(e)
            if converted is e:
                raise
            self._local.cut_off = reused
            raise converted from e

    def pipelined(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in one write transaction sent as one round trip where the dialect pipelines (only a
        result ``fn`` reads waits for the database). Any failure is raised after rolling back."""
        raw = self._raw()
        self._reused()
        conn = Conn(raw, self.dialect, pipelined=True)
        try:
            with self.dialect.pipeline(raw):
                self.dialect.begin_write(raw)
                result = fn(conn)
                conn.flush()
                raw.execute("COMMIT")
        except BaseException:
            try:
                raw.execute("ROLLBACK")
            except Exception:
                self._drop_raw()
            raise
        return result

    def run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in a write transaction, synchronously."""
        with self.transaction() as conn:
            return fn(conn)

    def query(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on a read connection, synchronously; a read that finds its connection cut off (by a
        database restart since it was last used) is repeated once on a new one."""
        self._local.cut_off = False
        try:
            with self.reading() as conn:
                return fn(conn)
        except DatabaseUnavailable:
            if not self._local.cut_off:
                raise
        with self.reading() as conn:
            return fn(conn)

    # -- async -----------------------------------------------------------------------------------------

    async def write(self, fn: Callable[[Conn], T], *, guard: Guard | None = None, quick: bool = False) -> T:
        """Run ``fn`` in a write transaction shared with other concurrent writes (group commit).

        With ``guard``, ``fn`` runs only if the guard's check passes for its key in that same transaction
        (else :class:`GuardFailed`); the checks of all guarded writes in a batch take one query.
        ``quick`` says the write is a few rows (a step's checkpoint, a run started or claimed): where the
        driver commits synchronously (SQLite), only such a write may be committed on the event loop
        itself while the database is quiet; any other (a batch of ingested chunks) takes the writer
        thread, so the loop never waits for it.
        """
        committer = self._committer
        if committer is None:
            with self._lock:
                if self._committer is None:
                    self._committer = _GroupCommitter(self)
                committer = self._committer
        task = asyncio.current_task()
        if (quick or not committer.direct.blocks) and committer.claim_direct(task):
            try:
                value = await committer.direct.commit(Write(fn, guard))
            finally:
                turn = committer.release_direct(task)
            if value is not HAND_OVER:
                if turn:  # a run whose steps never wait for anything else must still let others run
                    await asyncio.sleep(0)
                return value  # type: ignore[no-any-return]
        return await committer.submit(fn, guard, self._wait())

    def _wait(self) -> float:
        """How long the caller may wait for an unreachable database (see :func:`bounded_waits`)."""
        limit = _wait_limit.get()
        return self.unavailable_retry_seconds if limit is None else limit

    def _reader_pool(self) -> ThreadPoolExecutor:
        if self._readers is None:
            with self._lock:
                if self._readers is None:
                    self._readers = ThreadPoolExecutor(4, thread_name_prefix="crewline-read")
        return self._readers

    def background(self, fn: Callable[[Conn], object]) -> bool:
        """Queue ``fn`` on a read connection's thread, tied to no event loop (``fn`` handles its own
        errors); False once the database is closing. :meth:`close` waits for what was queued."""
        if self._closed:
            return False
        try:
            self._reader_pool().submit(self.query, fn)
        except RuntimeError:  # the pool was shut down
            return False
        return True

    async def read(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on a read connection in a thread, reconnecting with backoff through an outage."""
        readers = self._reader_pool()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self._wait()
        delay = 0.05
        while True:
            try:
                return await loop.run_in_executor(readers, self.query, fn)
            except DatabaseUnavailable:
                if time.monotonic() + delay > deadline or self._closed:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)

    async def warm(self) -> None:
        """Open the connections and start the threads that reads and writes use, so that the first
        requests a server answers do not wait for them (an empty write commits nothing to disk)."""
        await asyncio.gather(*(self.read(lambda conn: None) for _ in range(4)))
        await self.write(lambda conn: None)

    def close(self) -> None:
        self._closed = True
        if self._committer is not None:
            self._committer.close()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        with self._lock:
            raws, self._all_raw = self._all_raw, []
        for raw in raws:
            with contextlib.suppress(Exception):
                raw.close()

    def __repr__(self) -> str:
        return f"<Database {self.dialect.safe_url()}>"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# The longest pause between two attempts to reach the database: how late after its return a waiting
# write or read notices it.
_MAX_DELAY = 1.0


class _Outage:
    """One log line when the database stops answering and one when it answers again, however many
    threads and requests find it down meanwhile."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._since: float | None = None
        self._lock = threading.Lock()

    def down(self, reason: str) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.error(
            "database %s is unreachable (%s): requests answer 503, writes wait for it to return",
            self._label,
            reason,
        )

    def up(self) -> None:
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("database %s is reachable again after %.1fs", self._label, time.monotonic() - since)


@dataclass(slots=True)  # not frozen: one per checkpoint, and frozen costs four times as much to make
class Guard:
    """A precondition for a write: ``check(conn, keys)`` returns the keys that pass, for a whole batch."""

    check: Callable[[Conn, list[Any]], set[Any]]
    key: Any
    # ``assertion(conn, keys)`` issues, without reading its result, a statement that fails the
    # transaction unless every key passes (taking the locks ``check`` would): where the dialect
    # pipelines, a batch whose guards all assert then commits in one round trip.
    assertion: Callable[[Conn, list[Any]], None] | None = None
    # True when the guarded write cannot change what ``check`` reads (a step's checkpoint leaves its
    # run's lease as it is): a connection whose previous transaction passed the same guard, with
    # nothing committed by any other connection since, may then take the check as passed.
    keeps: bool = False


class _Pending(Write):
    """A write queued for the writer thread, and who awaits its outcome."""

    __slots__ = ("deadline", "future", "loop")

    def __init__(
        self,
        fn: Callable[[Conn], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        guard: Guard | None,
        deadline: float,  # monotonic: until when it may wait for an unreachable database
    ) -> None:
        super().__init__(fn, guard)
        self.future = future
        self.loop = loop
        self.deadline = deadline


# How long one task's direct commits may hold the event loop before it lets the loop turn.
_LOOP_HOLD = 0.001


class _GroupCommitter:
    """One writer thread; each transaction carries every write queued while the last one committed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        # The writer thread sleeps on this doorbell; whoever gives a sleeping writer something to do rings
        # it once. A C queue wakes a thread for a fraction of what a Condition costs on the hot path.
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._asleep = False
        self._closed = False
        # A transaction is being committed, by the writer thread or from an event loop: writes queue.
        self._busy = False
        # Writes the last commit carried: more than one means writes overlap, and share commits.
        self._last_batch = 0
        # The task whose writes were committed from the event loop in the loop's current turn, and since
        # when: the tasks woken with it queue, so that runs in flight keep sharing commits instead of
        # taking turns on the loop. The task itself may go on committing directly (a lone run's next
        # steps) for up to _LOOP_HOLD before it lets the loop turn: a turn costs a lone step about 5%.
        self._turn_owner: asyncio.Task[Any] | None = None
        self._turn_since = 0.0
        self.direct = direct_writer(db.dialect, lambda raw, p: Conn(raw, db.dialect, p), _run_batch)
        self._thread = threading.Thread(target=self._loop, name="crewline-commit", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Conn], T], guard: Guard | None, wait: float) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        pending = _Pending(fn, fut, loop, guard, time.monotonic() + wait)
        with self._lock:
            if self._closed:
                raise StoreError("the database is closed")
            self._pending.append(pending)
            self._ring()
        return fut

    def _ring(self) -> None:
        """Wake the writer if it sleeps (call holding ``_lock``)."""
        if self._asleep:
            self._asleep = False
            self._bell.put(None)

    def claim_direct(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` may commit its write from its event loop now (then it must call
        :meth:`release_direct`): the writer is idle, nothing is queued, the database is quiet and no
        other task has committed from the loop in this turn."""
        with self._lock:
            if self._busy or self._pending or self._closed or self._last_batch > 1:
                return False
            if self._turn_owner is not None and self._turn_owner is not task:
                return False
            self._busy = True
            return True

    def release_direct(self, task: asyncio.Task[Any] | None) -> bool:
        """End ``task``'s direct commit; returns whether it must now let the loop turn."""
        with self._lock:
            self._busy = False
            self._last_batch = 1
            if self._pending:
                self._ring()
        now = time.monotonic()
        if self._turn_owner is None:
            self._turn_owner, self._turn_since = task, now
            asyncio.get_running_loop().call_soon(self._next_turn)
        return task is None or now - self._turn_since >= _LOOP_HOLD

    def _next_turn(self) -> None:
        # Runs at the loop's next turn, which comes even when the loop is about to end: asyncio.run
        # (and uvloop's) turns it again to shut down, so no ended loop's task keeps the turn.
        self._turn_owner = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ring()
        self._thread.join(timeout=30)
        self.direct.close()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._pending and (not self._busy or self._closed):
                    batch, self._pending = self._pending, []
                    self._busy = True
                elif self._closed:
                    return
                else:
                    self._asleep = True
                    batch = []
            if not batch:
                self._bell.get()
                continue
            try:
                self._commit(batch)
            finally:
                with self._lock:
                    self._busy = False
                    self._last_batch = len(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` in one transaction; if that fails, each write in its own.

        While the database is unreachable the batch is retried with backoff, taking in the writes queued
        meanwhile, and each write whose wait is over (a request's is short) fails with the outage."""
        if self._pipelined(batch):
            return
        delay = 0.05
        while batch:
            try:
                with self._db.transaction() as conn:
                    outcomes = _run_batch(conn, batch)
            except DatabaseUnavailable as e:
                now = time.monotonic()
                late = [p for p in batch if self._closed or p.deadline <= now + delay]
                _answer(late, [(False, e)] * len(late))
                batch = [p for p in batch if not (self._closed or p.deadline <= now + delay)]
                if batch:
                    time.sleep(delay)
                    delay = min(delay * 2, _MAX_DELAY)
                    with self._lock:
                        batch, self._pending = batch + self._pending, []
                continue
            except Exception as e:
                if len(batch) == 1:
                    _answer(batch, [(False, e)])
                else:
                    for p in batch:
                        self._commit([p])
                return
            _answer(batch, outcomes)
            return

    def _pipelined(self, batch: list[_Pending]) -> bool:
        """The batch in one round trip where the dialect pipelines and every guard asserts; False when
        it did not commit (a lost lease, an error, an outage), for the ordinary path to take it from the
        start, telling a failed guard from other errors (the writes may run again: see the module)."""
        if not self._db.dialect.pipelines or not batch:
            return False
        asserts: dict[Callable[[Conn, list[Any]], None], list[Any]] = {}
        for p in batch:
            if p.guard is None or p.guard.assertion is None:
                return False
            asserts.setdefault(p.guard.assertion, []).append(p.guard.key)

        def run(conn: Conn) -> list[tuple[bool, Any]]:
            for assertion, keys in asserts.items():
                assertion(conn, keys)
            return [(True, p.fn(conn)) for p in batch]

        try:
            outcomes = self._db.pipelined(run)
        except Exception:
            return False
        _answer(batch, outcomes)
        return True


def _answer(batch: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each write its outcome on the event loop that awaits it."""
    if len(batch) == 1:  # a lone run's every step: no grouping to do
        (ok, value), p = outcomes[0], batch[0]
        with contextlib.suppress(RuntimeError):
            p.loop.call_soon_threadsafe(_deliver_one, p.future, ok, value)
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for p, (ok, value) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(p.loop, []).append((p.future, ok, value))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: its callers are gone
            loop.call_soon_threadsafe(_deliver, items)


def _run_batch(conn: Conn, batch: Sequence[Write]) -> list[tuple[bool, Any]]:
    """Check every guard of the batch (one query per kind of guard), then run the writes that pass."""
    if len(batch) == 1:  # a lone run's every step: no grouping to do
        p = batch[0]
        if p.guard is None or p.guard.key in p.guard.check(conn, [p.guard.key]):
            return [(True, p.fn(conn))]
        return [(False, GuardFailed(f"precondition failed for {p.guard.key!r}"))]
    passed: dict[int, bool] = {}
    by_check: dict[Callable[[Conn, list[Any]], set[Any]], list[int]] = {}
    for i, p in enumerate(batch):
        if p.guard is not None:
            by_check.setdefault(p.guard.check, []).append(i)
    for check, members in by_check.items():
        ok = check(conn, [batch[i].guard.key for i in members])
        for i in members:
            passed[i] = batch[i].guard.key in ok
    out: list[tuple[bool, Any]] = []
    for i, p in enumerate(batch):
        if passed.get(i, True):
            out.append((True, p.fn(conn)))
        else:
            out.append((False, GuardFailed(f"precondition failed for {p.guard.key!r}")))
    return out


def _deliver(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in items:
        _deliver_one(fut, ok, value)


def _deliver_one(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
