"""A lone write is committed from the event loop; writes in flight together still share commits.

Where a write ran is observed from inside it: the writer thread is named ``crewline-commit``, and a write
committed from the loop runs on the loop's own thread. What was committed is read back on a connection of
its own, so a test fails if a write returned before its transaction was committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crewline.errors import GuardFailed
from crewline.store import database as database_module
from crewline.store import direct
from crewline.store.database import Conn, Database, Guard


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield database
    database.close()


class Seen:
    """Each write's thread and transaction (the Conn it was given), in the order they ran."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.conns: list[Conn] = []

    def insert(self, key: int) -> Callable[[Conn], int]:
        def write(conn: Conn) -> int:
            self.threads.append(threading.current_thread().name)
            self.conns.append(conn)
            conn.defer("INSERT INTO t (id, v) VALUES (?, ?)", (key, "x"))
            return key

        return write


def _rows(url: str) -> list[int]:
    other = Database(url)
    try:
        return [r[0] for r in other.query(lambda c: c.all("SELECT id FROM t ORDER BY id"))]
    finally:
        other.close()


async def _lone_write_on_the_loop(db: Database, seen: Seen) -> int:
    """Lone writes until one is committed from the loop (PostgreSQL's asynchronous connection opens in
    the background on first use; the writes before it take the writer thread)."""
    loop_thread = threading.current_thread().name
    for key in range(1, 200):
        assert await db.write(seen.insert(key), quick=True) == key
        if seen.threads[-1] == loop_thread:
            return key
        await asyncio.sleep(0.01)
    raise AssertionError(f"no lone write was committed from the event loop: {seen.threads[-5:]}")


async def test_a_lone_write_is_committed_from_the_loop_once_and_durably(db: Database) -> None:
    seen = Seen()
    key = await _lone_write_on_the_loop(db, seen)
    before = len(seen.threads)
    assert await db.write(seen.insert(key + 1000), quick=True) == key + 1000
    assert seen.threads[before:] == [threading.current_thread().name]  # run once, not handed over
    assert _rows(db.url) == [*range(1, key + 1), key + 1000]


async def test_writes_in_flight_together_share_commits_on_the_writer_thread(db: Database) -> None:
    seen = Seen()
    await _lone_write_on_the_loop(db, seen)
    first = len(seen.threads)
    keys = range(1000, 1050)
    assert await asyncio.gather(*(db.write(seen.insert(k), quick=True) for k in keys)) == list(keys)
    threads, conns = seen.threads[first:], seen.conns[first:]
    assert threads.count("crewline-commit") >= 49, threads
    assert len({id(c) for c in conns}) <= 10, "fifty writes in flight took a commit each"
    assert set(keys) <= set(_rows(db.url))


async def test_a_write_that_reads_what_it_wrote_gets_its_answer(db: Database) -> None:
    await _lone_write_on_the_loop(db, Seen())

    def count_after_insert(conn: Conn) -> int:
        conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (5000, "read"))
        return int(conn.scalar("SELECT COUNT(*) FROM t WHERE v = ?", ("read",)))

    assert await db.write(count_after_insert, quick=True) == 1
    assert 5000 in _rows(db.url)


async def test_a_lone_write_whose_guard_fails_writes_nothing(db: Database) -> None:
    await _lone_write_on_the_loop(db, Seen())

    def passing(conn: Conn, keys: list[Any]) -> set[Any]:
        return {k for k in keys if k == "yes"}

    def asserting(conn: Conn, keys: list[Any]) -> None:
        bad = sum(1 for k in keys if k != "yes")
        conn.execute(f"SELECT 1 / {1 - min(bad, 1)}")

    guard = Guard(passing, "no", asserting)
    with pytest.raises(GuardFailed):
        await db.write(Seen().insert(6000), quick=True, guard=guard)
    assert await db.write(Seen().insert(6001), quick=True, guard=Guard(passing, "yes", asserting)) == 6001
    rows = _rows(db.url)
    assert 6000 not in rows and 6001 in rows


async def test_a_write_waiting_for_another_process_lock_leaves_the_loop_free(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    db.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    other = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holding SQLite's write lock
        write = asyncio.ensure_future(db.write(Seen().insert(1), quick=True))
        for _ in range(20):  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(0.005)
        assert not write.done()
        other.execute("COMMIT")
        assert await write == 1
        assert _rows(sqlite_url) == [1]
    finally:
        other.close()
        db.close()


async def test_slow_commits_on_the_loop_send_the_next_writes_to_the_writer_thread(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk whose commits hold the loop up (every commit counted slow here) gets the writer thread."""
    db = Database(sqlite_url)
    db.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    monkeypatch.setattr(direct, "_SLOW_COMMIT", -1.0)
    seen = Seen()
    try:
        for key in range(1, direct._WINDOW + 11):
            assert await db.write(seen.insert(key), quick=True) == key
        loop_thread = threading.current_thread().name
        assert seen.threads[: direct._WINDOW] == [loop_thread] * direct._WINDOW
        assert seen.threads[direct._WINDOW :] == ["crewline-commit"] * 10
        assert _rows(sqlite_url) == list(range(1, direct._WINDOW + 11))
    finally:
        db.close()


async def test_a_write_not_said_quick_leaves_the_loop_on_sqlite(db: Database) -> None:
    """A large write (a batch of ingested chunks) must not hold the loop up: on SQLite it takes the writer
    thread even when the database is quiet; PostgreSQL's direct commit does not block the loop."""
    seen = Seen()
    await _lone_write_on_the_loop(db, seen)
    before = len(seen.threads)
    assert await db.write(seen.insert(7000)) == 7000
    loop_thread = threading.current_thread().name
    assert seen.threads[before:] == [loop_thread if db.dialect.pipelines else "crewline-commit"]
    assert 7000 in _rows(db.url)


async def test_a_lone_write_failing_midway_commits_nothing_and_the_loop_path_goes_on(db: Database) -> None:
    """The second statement fails (a duplicate key): the first is not committed, the caller gets the
    error (on PostgreSQL from the writer thread, which runs the write again), and the next lone write
    takes the loop again."""
    seen = Seen()
    key = await _lone_write_on_the_loop(db, seen)

    def two_inserts(conn: Conn) -> None:
        conn.defer("INSERT INTO t (id, v) VALUES (?, ?)", (9000, "first"))
        conn.defer("INSERT INTO t (id, v) VALUES (?, ?)", (key, "a duplicate"))

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await db.write(two_inserts, quick=True)
    assert 9000 not in _rows(db.url)
    await asyncio.sleep(0)  # a write made in the same turn of the loop as the last queues, by design
    before = len(seen.threads)
    assert await db.write(seen.insert(9001), quick=True) == 9001
    assert seen.threads[before:] == [threading.current_thread().name]


async def test_postgresql_lone_writes_reuse_one_prepared_statement_each(pg_url: str) -> None:
    db = Database(pg_url)
    db.run(lambda c: c.execute("DROP TABLE IF EXISTS t"))
    db.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    try:
        seen = Seen()
        key = await _lone_write_on_the_loop(db, seen)
        for k in range(key + 1, key + 30):
            assert await db.write(seen.insert(k), quick=True) == k
        aconn = db._committer.direct._aconn  # type: ignore[union-attr]
        cur = await aconn.execute("SELECT statement FROM pg_prepared_statements WHERE name LIKE 'crewline_%'")
        statements = [r[0] for r in await cur.fetchall()]
        assert sum("INSERT INTO t" in s for s in statements) == 1, statements
        assert _rows(pg_url) == list(range(1, key + 30))
    finally:
        db.close()


class Leases:
    """A guard over a ``leases`` table whose checks are counted: the key passes while it is the holder."""

    def __init__(self, db: Database) -> None:
        db.run(lambda c: c.execute("CREATE TABLE leases (id INTEGER PRIMARY KEY, holder TEXT)"))
        db.run(lambda c: c.execute("INSERT INTO leases (id, holder) VALUES (1, 'me')"))
        self.checks = 0

    def check(self, conn: Conn, keys: list[Any]) -> set[Any]:
        self.checks += 1
        return {k for k in keys if conn.scalar("SELECT holder FROM leases WHERE id = 1") == k}

    def guard(self, key: str = "me") -> Guard:
        return Guard(self.check, key, keeps=True)


async def test_a_kept_guard_is_checked_again_once_another_connection_commits(sqlite_url: str) -> None:
    """A write that keeps its guard (a step's checkpoint) lets the loop's next write with the same guard
    skip the check, but only while no other connection has committed: a lease taken over by another
    process must still fail the write."""
    db = Database(sqlite_url)
    db.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    leases = Leases(db)
    other = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None)
    seen = Seen()
    try:
        key = await _lone_write_on_the_loop(db, seen)
        for k in range(key + 1, key + 6):  # one check, then four writes known to pass
            assert await db.write(seen.insert(k), quick=True, guard=leases.guard()) == k
        assert leases.checks == 1
        assert seen.threads[-5:] == [threading.current_thread().name] * 5

        other.execute("UPDATE leases SET holder = 'someone else' WHERE id = 1")
        with pytest.raises(GuardFailed):
            await db.write(seen.insert(100), quick=True, guard=leases.guard())
        with pytest.raises(GuardFailed):  # a failed check is not remembered as a pass
            await db.write(seen.insert(101), quick=True, guard=leases.guard())
        assert 100 not in _rows(sqlite_url) and 101 not in _rows(sqlite_url)
    finally:
        other.close()
        db.close()


async def test_a_kept_guard_is_checked_again_after_any_other_write_of_the_loop(sqlite_url: str) -> None:
    """The loop's own writes leave the data version alone: a write not known to keep the guard (one that
    releases the lease, say) makes the next guarded write check again, as does another key."""
    db = Database(sqlite_url)
    db.run(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    leases = Leases(db)
    seen = Seen()
    try:
        key = await _lone_write_on_the_loop(db, seen)
        await db.write(seen.insert(key + 1), quick=True, guard=leases.guard())
        await db.write(seen.insert(key + 2), quick=True, guard=leases.guard())
        assert leases.checks == 1

        await db.write(lambda c: c.execute("UPDATE leases SET holder = 'nobody' WHERE id = 1"), quick=True)
        assert seen.threads[-1] == threading.current_thread().name
        with pytest.raises(GuardFailed):
            await db.write(seen.insert(200), quick=True, guard=leases.guard())
        assert leases.checks == 2

        await db.write(seen.insert(201), quick=True, guard=leases.guard("nobody"))
        await db.write(seen.insert(202), quick=True, guard=leases.guard("nobody"))
        with pytest.raises(GuardFailed):  # a key of its own is checked, not taken from the last one
            await db.write(seen.insert(203), quick=True, guard=leases.guard("me"))
        assert leases.checks == 4
        assert 200 not in _rows(sqlite_url) and 203 not in _rows(sqlite_url)
    finally:
        db.close()


async def test_a_task_committing_back_to_back_from_the_loop_still_lets_others_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One task's lone writes go on from the loop without a turn in between until they have held it for
    the hold, then let the loop turn: a task beside it is never starved, and keeps its turns."""
    seen = Seen()
    key = await _lone_write_on_the_loop(db, seen)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def writes(first: int, count: int) -> list[str]:
        before = len(seen.threads)
        for k in range(first, first + count):
            assert await db.write(seen.insert(k), quick=True) == k
        return seen.threads[before:]

    side = asyncio.ensure_future(ticker())
    try:
        await asyncio.sleep(0)
        monkeypatch.setattr(database_module, "_LOOP_HOLD", 1e9)  # never let go: the ticker waits
        ticks = 0
        threads = await writes(key + 1, 50)
        if not db.dialect.pipelines:  # PostgreSQL's direct commits wait for the server: the loop turns
            assert ticks == 0
            assert threads == [threading.current_thread().name] * 50

        monkeypatch.setattr(database_module, "_LOOP_HOLD", 0.0)  # a turn after every write
        await asyncio.sleep(0)
        ticks = 0
        await writes(key + 100, 50)
        assert ticks >= 49

        monkeypatch.undo()  # the real hold: 300 writes take longer than it, so the ticker gets turns
        await asyncio.sleep(0)
        ticks = 0
        await writes(key + 200, 300)
        assert ticks >= 1
        assert len(_rows(db.url)) == key + 400
    finally:
        side.cancel()
