"""Checkpoints are written only under the run's lease, whichever way a write reaches the database.

A lone checkpoint (one run at a time) takes the one-round-trip path on PostgreSQL, where the lease is
asserted in the transaction instead of read first; a batch of concurrent ones takes the group commit.
Both must refuse a worker that lost its lease, write nothing for it, and leave the connection usable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from crewline import App, Context
from crewline.flows.engine import LeaseLost, RunSignals
from crewline.flows.journal import Journal, Outcome
from crewline.observe.events import Event, StepEvent
from crewline.store.database import Conn


def _hold(app: App, run_id: str, owner: str) -> None:
    app.db.run(
        lambda c: c.execute(
            "UPDATE runs SET status = 'running', lease_owner = ?, lease_until = ? WHERE id = ?",
            (owner, time.time() + 60, run_id),
        )
    )


def _mark(run_id: str, text: str) -> Callable[[Conn], None]:
    def write(conn: Conn) -> None:
        conn.execute("UPDATE runs SET wait_reason = ? WHERE id = ?", (text, run_id))

    return write


def _answering(write: Callable[[Conn], None], answer: int) -> Callable[[Conn], int]:
    def run(conn: Conn) -> int:
        write(conn)
        return answer

    return run


def _marks(app: App, ids: list[str]) -> list[str | None]:
    return [
        app.db.query(lambda c, rid=rid: c.scalar("SELECT wait_reason FROM runs WHERE id = ?", (rid,)))
        for rid in ids
    ]


class Seen:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def observe(self, event: Event) -> None:
        self.seen.append(event)


@pytest.fixture
def two_runs(db_url: str) -> tuple[App, list[str]]:
    app = App(db_url)

    @app.workflow()
    async def idle(ctx: Context) -> None:
        return None

    ids = [asyncio.run(app.start(idle)) for _ in range(2)]
    for rid in ids:
        _hold(app, rid, "w1")
    return app, ids


async def test_a_lone_checkpoint_is_written_under_its_lease_and_refused_without(
    two_runs: tuple[App, list[str]],
) -> None:
    app, (rid, _) = two_runs
    try:
        assert await app.engine.checkpoint(rid, "w1", _answering(_mark(rid, "held"), 42)) == 42
        with pytest.raises(LeaseLost, match=f"run {rid} is no longer held by worker w2"):
            await app.engine.checkpoint(rid, "w2", _mark(rid, "stolen"))
        # The refused write left nothing behind, and the connection serves the next write.
        assert _marks(app, [rid]) == ["held"]
        await app.engine.checkpoint(rid, "w1", _mark(rid, "again"))
        assert _marks(app, [rid]) == ["again"]
    finally:
        app.close()


async def test_a_failing_lone_checkpoint_raises_its_error_and_writes_nothing(
    two_runs: tuple[App, list[str]],
) -> None:
    app, (rid, _) = two_runs

    def half_then_fail(conn: Conn) -> None:
        _mark(rid, "half")(conn)
        raise ValueError("the write broke")

    try:
        with pytest.raises(ValueError, match="the write broke"):
            await app.engine.checkpoint(rid, "w1", half_then_fail)
        assert _marks(app, [rid]) == [None]
    finally:
        app.close()


async def test_concurrent_checkpoints_keep_each_lease_apart(two_runs: tuple[App, list[str]]) -> None:
    app, (mine, theirs) = two_runs
    _hold(app, theirs, "w2")
    try:
        results = await asyncio.gather(
            app.engine.checkpoint(mine, "w1", _mark(mine, "w1 wrote")),
            app.engine.checkpoint(theirs, "w1", _mark(theirs, "w1 wrote")),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], LeaseLost)
        assert _marks(app, [mine, theirs]) == ["w1 wrote", None]
    finally:
        app.close()


async def test_a_step_in_a_batch_retried_after_another_runs_lost_lease_is_reported_once(
    two_runs: tuple[App, list[str]],
) -> None:
    app, (mine, theirs) = two_runs
    _hold(app, theirs, "w2")
    events = Seen()
    app.engine.observers.add(events)
    journals = [Journal(app.engine, await app.get_run(rid), {}, "w1", RunSignals()) for rid in (mine, theirs)]
    entries = [await journal.begin("inc", "step") for journal in journals]
    try:
        results = await asyncio.gather(
            *(j.record(e, Outcome("done", b"1")) for j, e in zip(journals, entries, strict=True)),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], LeaseLost)
        steps = [(e.run_id, e.step, e.status) for e in events.seen if isinstance(e, StepEvent)]
        assert steps == [(mine, 1, "done")]
        assert [(s.step_no, s.status) for s in await app.steps(mine)] == [(1, "done")]
        assert await app.steps(theirs) == []
    finally:
        app.close()
