"""Durable sleeps, events, child workflows and cancellation."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from crewline import App, Context, InvalidRunState, RetryPolicy, RunFailed

from ._drive import drive, step_once


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


async def test_a_long_sleep_parks_the_run_until_it_is_due(app: App) -> None:
    @app.workflow()
    async def wf(ctx: Context) -> str:
        await ctx.sleep("2d")
        return "woke"

    rid = await app.start(wf)
    before = time.time()
    assert await step_once(app, "w1") == ["parked"]
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_reason == "sleep" and run.lease_owner is None
    assert run.wake_at is not None and run.wake_at >= before + 2 * 86400 - 5
    assert await step_once(app, "w2") == []  # not due: nobody claims it
    run = await drive(app, rid)  # drive makes parked runs due, as time passing would
    assert run.output == "woke"


async def test_a_short_sleep_stays_in_the_worker(app: App) -> None:
    @app.workflow()
    async def wf(ctx: Context) -> float:
        start = time.monotonic()
        await ctx.sleep(0.05)
        return time.monotonic() - start

    rid = await app.start(wf)
    assert await step_once(app, "w1") == ["completed"]
    assert (await app.get_run(rid)).output >= 0.04


async def test_events_sent_before_or_during_the_wait_are_delivered_in_order(app: App) -> None:
    @app.workflow()
    async def wf(ctx: Context) -> list[Any]:
        first = await ctx.wait_for("approved")
        second = await ctx.wait_for("approved", timeout="1h")
        return [first, second]

    rid = await app.start(wf)
    await app.send_event(rid, "approved", {"by": "ada"})
    assert await step_once(app, "w1") == ["parked"]  # took the first, waits for the second
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_reason == "event:approved"
    await app.send_event(rid, "approved", {"by": "bob"})
    assert (await app.get_run(rid)).wake_at is not None  # the event made it due
    assert await step_once(app, "w2") == ["completed"]
    assert (await app.get_run(rid)).output == [{"by": "ada"}, {"by": "bob"}]


async def test_wait_for_times_out_durably(app: App) -> None:
    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            await ctx.wait_for("reply", timeout="3d")
        except Exception as e:
            return type(e).__name__
        return "got it"

    rid = await app.start(wf)
    run = await drive(app, rid)
    assert run.output == "WaitTimeout"
    with pytest.raises(InvalidRunState):
        await app.send_event(rid, "reply", {})  # finished runs take no events


async def test_child_workflows_return_their_output_or_raise_their_failure(app: App) -> None:
    calls = Counter[str]()

    async def work(n: int) -> int:
        calls["work"] += 1
        if n < 0:
            raise ValueError("negative")
        return n * 10

    @app.workflow()
    async def child(ctx: Context, n: int) -> int:
        return await ctx.step(work, n, retry=RetryPolicy(max_attempts=1))

    @app.workflow()
    async def parent(ctx: Context, n: int) -> Any:
        a = await ctx.child(child, n)
        try:
            await ctx.child("child", -1)
        except RunFailed as e:
            return [a, e.status]
        return [a, "no failure"]

    rid = await app.start(parent, 4)
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == [40, "failed"]
    children = await app.db.read(
        lambda c: c.all("SELECT id, status, parent_id FROM runs WHERE parent_id = ?", (rid,))
    )
    assert sorted(r[1] for r in children) == ["completed", "failed"]
    assert calls["work"] == 2


async def test_cancel_a_waiting_run_and_its_children(app: App) -> None:
    @app.workflow()
    async def child(ctx: Context) -> None:
        await ctx.wait_for("never")

    @app.workflow()
    async def parent(ctx: Context) -> None:
        await ctx.child(child)

    rid = await app.start(parent)
    await step_once(app, "w1")  # parent parks waiting for the child
    await step_once(app, "w1")  # child parks waiting for its event
    assert await app.cancel(rid) == "cancelled"
    statuses = await app.db.read(lambda c: c.all("SELECT status FROM runs"))
    assert sorted(s[0] for s in statuses) == ["cancelled", "cancelled"]
    with pytest.raises(InvalidRunState, match="already cancelled"):
        await app.cancel(rid)


async def test_cancel_a_running_run_stops_it_at_the_next_step(app: App) -> None:
    calls = Counter[str]()

    @app.workflow()
    async def wf(ctx: Context) -> None:
        async def one() -> None:
            calls["one"] += 1
            await app.cancel(ctx.run_id)  # an operator cancels while step 1 runs

        async def two() -> None:
            calls["two"] += 1

        await ctx.step(one, name="one")
        ctx._signals.cancel = (await app.get_run(ctx.run_id)).cancel_requested  # what the worker's poll does
        await ctx.step(two, name="two")

    rid = await app.start(wf)
    await step_once(app, "w1")
    run = await app.get_run(rid)
    assert run.status == "cancelled" and calls == {"one": 1}
