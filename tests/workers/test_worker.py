"""Workers: queue limits across workers, priority, leases kept alive, graceful stop, cron ticks."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from crewline import App, Context, InvalidRunState, RunFailed, Settings
from crewline.flows.engine import RunSignals
from crewline.flows.run_store import finish_run
from crewline.workers.claim import claim_runs, extend_leases
from crewline.workers.cron import fire_due


def fast_app(db_url: str, **settings: Any) -> App:
    return App(settings=Settings().with_(database_url=db_url, poll_interval=0.02, **settings))


@pytest.fixture
def app(db_url: str) -> Any:
    a = fast_app(db_url)
    yield a
    a.close()


async def run_workers(app: App, n: int, concurrency: int, ids: list[str], timeout: float = 60) -> None:
    workers = [app.worker(concurrency=concurrency, worker_id=f"w{i}") for i in range(n)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        for rid in ids:
            await app.result(rid, timeout=timeout, poll=0.02)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)


async def test_queue_concurrency_limit_holds_across_workers(app: App) -> None:
    app.queue("mail", concurrency=2)
    running, peak = Counter[str](), Counter[str]()

    async def send() -> None:
        running["now"] += 1
        peak["max"] = max(peak["max"], running["now"])
        await asyncio.sleep(0.05)
        running["now"] -= 1

    @app.workflow(queue="mail")
    async def mail(ctx: Context, i: int) -> int:
        await ctx.step(send)
        return i

    ids = [await app.start(mail, i) for i in range(10)]
    await run_workers(app, n=3, concurrency=4, ids=ids)
    assert peak["max"] == 2


async def test_higher_priority_runs_first(app: App) -> None:
    order: list[int] = []

    @app.workflow()
    async def job(ctx: Context, p: int) -> None:
        order.append(p)

    ids = [await app.start(job, p, priority=p) for p in (1, 5, 3, 9, 0)]
    await run_workers(app, n=1, concurrency=1, ids=ids)
    assert order == [9, 5, 3, 1, 0]


async def test_heartbeats_keep_a_long_step_from_being_taken_over(db_url: str) -> None:
    app = fast_app(db_url, lease_seconds=0.6)
    calls = Counter[str]()

    async def slow() -> None:
        calls["slow"] += 1
        await asyncio.sleep(2.0)

    @app.workflow()
    async def wf(ctx: Context) -> None:
        await ctx.step(slow)

    try:
        rid = await app.start(wf)
        await run_workers(app, n=2, concurrency=2, ids=[rid])
        assert calls["slow"] == 1
        assert (await app.get_run(rid)).recoveries == 0
    finally:
        app.close()


async def test_stop_finishes_the_current_step_and_releases_the_run(app: App) -> None:
    calls = Counter[str]()
    in_step = asyncio.Event()

    async def first() -> None:
        calls["first"] += 1
        in_step.set()
        await asyncio.sleep(0.3)

    async def second() -> None:
        calls["second"] += 1

    @app.workflow()
    async def wf(ctx: Context) -> str:
        await ctx.step(first)
        await ctx.step(second)
        return "done"

    rid = await app.start(wf)
    worker = app.worker(concurrency=2, worker_id="leaving")
    task = asyncio.create_task(worker.run())
    await in_step.wait()
    worker.stop()
    await asyncio.wait_for(task, 10)
    run = await app.get_run(rid)
    assert run.status == "pending" and run.lease_owner is None
    assert [s.status for s in await app.steps(rid)] == ["done"]  # the step in flight finished and was kept
    await run_workers(app, n=1, concurrency=1, ids=[rid])
    assert (await app.get_run(rid)).output == "done"
    assert calls == {"first": 1, "second": 1}


async def test_each_cron_tick_fires_once_whatever_the_number_of_workers(db_url: str) -> None:
    apps = [fast_app(db_url) for _ in range(3)]
    try:
        for a in apps:

            @a.workflow(schedule="0 9 * * *")
            async def digest(ctx: Context) -> None:
                return None

        monday_0830 = datetime(2026, 11, 30, 8, 30, tzinfo=UTC).timestamp()
        wfs = [a.workflows["digest"] for a in apps]

        async def tick(now: float) -> list[str]:
            results = await asyncio.gather(
                *(
                    a.db.write(lambda c, wf=wf: fire_due(c, [wf], 4096, now))
                    for a, wf in zip(apps, wfs, strict=True)
                )
            )
            return [rid for started in results for rid in started]

        assert await tick(monday_0830) == []  # first sight of the schedule: no back-fill
        assert await tick(monday_0830 + 600) == []  # 08:40, nothing due
        fired = await tick(monday_0830 + 1800 + 5)  # 09:00:05
        assert fired == ["cron:digest:20261130T090000Z"]
        assert await tick(monday_0830 + 1800 + 30) == []
        assert await tick(monday_0830 + 3 * 86400) == [
            "cron:digest:20261202T090000Z"
        ]  # only the latest missed
        runs = await apps[0].list_runs()
        assert sorted(r.id for r in runs) == ["cron:digest:20261130T090000Z", "cron:digest:20261202T090000Z"]
    finally:
        for a in apps:
            a.close()


async def test_a_worker_resumes_a_run_whose_lease_expired(db_url: str) -> None:
    app = fast_app(db_url, lease_seconds=0.5)
    calls = Counter[str]()

    async def step() -> int:
        calls["step"] += 1
        return 7

    @app.workflow()
    async def wf(ctx: Context) -> int:
        return await ctx.step(step)

    try:
        rid = await app.start(wf)
        # A worker that vanished: it holds the run under a lease that is about to lapse.
        await app.db.write(
            lambda c: c.execute(
                "UPDATE runs SET status = 'running', lease_owner = 'ghost', lease_until = ? WHERE id = ?",
                (time.time() + 0.3, rid),
            )
        )
        await run_workers(app, n=1, concurrency=1, ids=[rid])
        run = await app.get_run(rid)
        assert run.output == 7 and run.recoveries == 1 and calls["step"] == 1
    finally:
        app.close()


class ExecutorBug(BaseException):
    """Something no executor handles, escaping the run's task."""


async def test_a_run_that_crashes_its_executor_is_failed_not_held_forever(app: App) -> None:
    @app.workflow()
    async def explode(ctx: Context) -> None:
        raise ExecutorBug("the executor broke")

    @app.workflow()
    async def fine(ctx: Context) -> str:
        return "ok"

    crashed = await app.start(explode)
    ok = await app.start(fine)
    worker = app.worker(concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        assert await app.result(ok, timeout=20, poll=0.02) == "ok"
        with pytest.raises(RunFailed, match="ExecutorCrashed: the worker could not execute this run"):
            await app.result(crashed, timeout=20, poll=0.02)
    finally:
        worker.stop()
        await task
    run = await app.get_run(crashed)
    assert run.lease_owner is None and run.error is not None and "ExecutorBug" in run.error["message"]
    with pytest.raises(InvalidRunState, match="already failed"):
        await app.cancel(crashed)


async def test_heartbeats_renew_only_the_runs_a_task_is_executing(app: App) -> None:
    @app.workflow()
    async def idle(ctx: Context) -> None:
        return None

    live, orphan = await app.start(idle), await app.start(idle)
    await app.db.write(
        lambda c: claim_runs(c, owner="w1", workflows=["idle"], limits={}, n=2, lease_seconds=1)
    )
    before = {r.id: r.lease_until for r in await app.list_runs()}
    held = await app.db.write(lambda c: extend_leases(c, "w1", 60, [live]))
    after = {r.id: r.lease_until for r in await app.list_runs()}
    assert held == {live}
    assert after[orphan] == before[orphan] and (after[live] or 0) > (before[live] or 0) + 30


async def test_a_heartbeat_stops_only_runs_whose_lease_was_lost(app: App) -> None:
    """A run that ended meanwhile (its task still finishing) keeps its task; one another worker took
    after the lease lapsed is stopped here."""

    @app.workflow()
    async def idle(ctx: Context) -> None:
        return None

    ended, taken = await app.start(idle), await app.start(idle)
    worker = app.worker(worker_id="w1")
    await app.db.write(
        lambda c: claim_runs(c, owner="w1", workflows=["idle"], limits={}, n=1, lease_seconds=60)
    )
    await app.db.write(lambda c: finish_run(c, ended, status="completed", owner="w1"))
    await app.db.write(
        lambda c: claim_runs(c, owner="w1", workflows=["idle"], limits={}, n=1, lease_seconds=0.01)
    )
    await asyncio.sleep(0.05)
    claimed = await app.db.write(
        lambda c: claim_runs(c, owner="w2", workflows=["idle"], limits={}, n=1, lease_seconds=60)
    )
    assert [r.id for r in claimed] == [taken]
    tasks = {rid: asyncio.create_task(asyncio.sleep(30)) for rid in (ended, taken)}
    try:
        for rid, task in tasks.items():
            worker._tasks[rid] = (task, RunSignals())
        await worker._heartbeat()
        await asyncio.sleep(0)
        assert not tasks[ended].cancelled()
        assert tasks[taken].cancelled()
    finally:
        for task in tasks.values():
            task.cancel()
