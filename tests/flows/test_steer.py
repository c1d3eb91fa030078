"""Pausing and resuming runs, workflows and queues; disabling workflows; flags read as steps."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context, InvalidInput, InvalidRunState, UnknownWorkflow, WorkflowDisabled
from crewline.workers.cron import fire_due

from ._drive import make_due, step_once


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    a = App(db_url)
    yield a
    a.close()


def counted(app: App) -> Counter[str]:
    calls = Counter[str]()

    async def work(label: str) -> str:
        calls[label] += 1
        return label

    @app.workflow(queue="mail")
    async def two_steps(ctx: Context) -> list[str]:
        return [await ctx.step(work, "one"), await ctx.step(work, "two")]

    @app.workflow()
    async def other(ctx: Context) -> str:
        return await ctx.step(work, "other")

    return calls


async def test_a_paused_run_is_never_claimed_and_resumes_from_its_next_step(app: App) -> None:
    calls = counted(app)
    rid = await app.start("two_steps")
    assert await app.steering.pause(rid) == "paused"
    assert await app.steering.pause(rid) == "already paused"
    assert await step_once(app, "w1") == []  # not claimed: no lease, no worker slot
    run = await app.get_run(rid)
    assert (run.status, run.lease_owner) == ("paused", None)
    assert await app.steering.resume(rid) == "resumed"
    assert await step_once(app, "w2") == ["completed"]
    assert calls == Counter({"one": 1, "two": 1})


async def wait_status(app: App, rid: str, status: str) -> Any:
    for _ in range(2000):
        run = await app.get_run(rid)
        if run.status == status:
            return run
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {rid} is {run.status}, not {status}")


async def test_a_running_run_pauses_at_its_next_step_boundary(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWLINE_LEASE_SECONDS", "1.5")  # the control loop looks every half second
    app = App(db_url)
    reached, go_on = asyncio.Event(), asyncio.Event()
    done = Counter[str]()

    async def first() -> int:
        reached.set()
        await go_on.wait()
        done["first"] += 1
        return 1

    async def second() -> int:
        done["second"] += 1
        return 2

    @app.workflow()
    async def slow(ctx: Context) -> int:
        return await ctx.step(first) + await ctx.step(second)

    w = app.worker(concurrency=1)
    task = asyncio.create_task(w.run())
    try:
        rid = await app.start("slow")
        await reached.wait()
        assert await app.steering.pause(rid) == "pause requested"
        await asyncio.sleep(2.0)  # the worker's control loop reads the request meanwhile
        go_on.set()
        run = await wait_status(app, rid, "paused")
        assert run.lease_owner is None and not run.pause_requested
        assert [s.name.rpartition(".")[2] for s in await app.steps(rid)] == ["first"]  # that step finished
        assert await app.steering.resume(rid) == "resumed"
        run = await wait_status(app, rid, "completed")
        assert run.output == 3 and done == Counter({"first": 1, "second": 1})
    finally:
        w.stop()
        await task
        app.close()


async def test_a_waiting_run_keeps_what_it_waits_for_while_paused(app: App) -> None:
    @app.workflow()
    async def waits(ctx: Context) -> Any:
        return await ctx.wait_for("go")

    rid = await app.start("waits")
    assert await step_once(app, "w1") == ["parked"]
    assert await app.steering.pause(rid) == "paused"
    await app.send_event(rid, "go", {"n": 1})  # arrives while paused: kept
    assert await step_once(app, "w2") == []
    assert (await app.get_run(rid)).status == "paused"
    await app.steering.resume(rid)
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_event == "go"
    assert await step_once(app, "w3") == ["completed"]
    assert (await app.get_run(rid)).output == {"n": 1}


async def test_pausing_or_resuming_a_run_in_the_wrong_state_changes_nothing(app: App) -> None:
    counted(app)
    rid = await app.start("other")
    assert await step_once(app, "w1") == ["completed"]
    before = await app.get_run(rid)
    with pytest.raises(InvalidRunState, match=f"run {rid} is already completed; only an unfinished run"):
        await app.steering.pause(rid)
    other = await app.start("other")
    with pytest.raises(InvalidRunState, match="is pending, not paused"):
        await app.steering.resume(other)
    assert (await app.get_run(rid)).updated_at == before.updated_at


async def test_pausing_a_workflow_holds_its_runs_and_new_ones_until_resumed(app: App) -> None:
    calls = counted(app)
    first = await app.start("two_steps")
    alone = await app.start("two_steps")
    await app.steering.pause(alone)  # paused one by one: a workflow resume leaves it paused
    result = await app.steering.pause_all("workflow", "two_steps")
    assert (result.changed, result.runs) == (True, 1)
    later = await app.start("two_steps")  # accepted, but waits
    unrelated = await app.start("other")
    assert await step_once(app, "w1") == ["completed"]  # only the other workflow's run
    assert [(await app.get_run(r)).status for r in (first, later, unrelated)] == [
        "paused",
        "pending",
        "completed",
    ]
    result = await app.steering.resume_all("workflow", "two_steps")
    assert result.runs == 1
    assert sorted(await step_once(app, "w2")) == ["completed", "completed"]
    assert (await app.get_run(alone)).status == "paused"
    assert calls["one"] == 2


async def test_pausing_a_queue_pauses_the_runs_of_every_workflow_in_it(app: App) -> None:
    counted(app)
    rid = await app.start("two_steps")  # queue "mail"
    other = await app.start("other")  # default queue
    await app.steering.pause_all("queue", "mail")
    assert await step_once(app, "w1") == ["completed"]
    assert (await app.get_run(rid)).status == "paused"
    await app.steering.resume_all("queue", "mail")
    assert await step_once(app, "w2") == ["completed"]
    assert (await app.get_run(other)).status == "completed"
    with pytest.raises(InvalidInput, match="unknown queue 'nope'"):
        await app.steering.pause_all("queue", "nope")


async def test_a_disabled_workflow_starts_no_runs_until_enabled(app: App) -> None:
    counted(app)
    running = await app.start("two_steps")
    result = await app.steering.disable("two_steps")
    assert result.changed and result.runs == 0
    with pytest.raises(
        WorkflowDisabled, match=r"workflow .two_steps. is disabled .*`crewline workflows enable two_steps`"
    ):
        await app.start("two_steps")
    assert await step_once(app, "w1") == ["completed"]  # its running runs finish
    assert (await app.get_run(running)).status == "completed"
    await app.steering.enable("two_steps")
    assert await app.start("two_steps")
    with pytest.raises(UnknownWorkflow, match="unknown workflow 'nope'"):
        await app.steering.enable("nope")


async def test_disable_with_pause_running_pauses_its_runs_and_enable_resumes_them(app: App) -> None:
    counted(app)
    rid = await app.start("two_steps")
    result = await app.steering.disable("two_steps", pause_running=True)
    assert result.runs == 1
    assert (await app.get_run(rid)).status == "paused"
    switches = await app.steering.switches()
    assert [(s.name, s.paused, s.disabled) for s in switches] == [("two_steps", True, True)]
    result = await app.steering.enable("two_steps")
    assert result.runs == 1 and await app.steering.switches() == []
    assert await step_once(app, "w1") == ["completed"]


async def test_cron_starts_no_run_of_a_disabled_workflow(app: App) -> None:
    @app.workflow(schedule="* * * * *")
    async def ticking(ctx: Context) -> None:
        return None

    wf = app.engine.resolve("ticking")
    await app.db.write(lambda c: fire_due(c, [wf], 4096, now=1_000_000.0))  # first sight: records the tick
    await app.steering.disable("ticking")
    started = await app.db.write(lambda c: fire_due(c, [wf], 4096, now=1_000_120.0))
    assert started == []
    await app.steering.enable("ticking")
    started = await app.db.write(lambda c: fire_due(c, [wf], 4096, now=1_000_240.0))
    assert len(started) == 1


async def test_a_flag_is_read_as_a_step_and_replayed_as_the_run_saw_it(app: App) -> None:
    seen: list[Any] = []

    @app.workflow()
    async def flagged(ctx: Context) -> Any:
        enabled = await ctx.flag("agents.enabled", default=True)
        seen.append(enabled)
        await ctx.wait_for("go")
        return enabled

    await app.steering.set_flag("agents.enabled", False)
    rid = await app.start("flagged")
    assert await step_once(app, "w1") == ["parked"]
    await app.steering.set_flag("agents.enabled", True)  # changed after the run read it
    await app.send_event(rid, "go", None)
    await make_due(app)
    assert await step_once(app, "w2") == ["completed"]
    assert seen == [False, False]  # the replay saw the recorded value, not the new one
    run = await app.get_run(rid)
    assert run.output is False
    steps = await app.steps(rid)
    assert (steps[0].kind, steps[0].name, steps[0].output) == ("flag", "agents.enabled", False)
    await app.steering.unset_flag("agents.enabled")
    other = await app.start("flagged")
    await step_once(app, "w3")
    assert (await app.steps(other))[0].output is True  # unset: the default


async def test_flags_refuse_bad_names_and_unknown_flags(app: App) -> None:
    with pytest.raises(InvalidInput, match="flag name 'no spaces' is not valid"):
        await app.steering.set_flag("no spaces", 1)
    with pytest.raises(InvalidInput, match="flag 'missing' is not set"):
        await app.steering.flag("missing")
    with pytest.raises(InvalidInput, match="flag 'missing' is not set"):
        await app.steering.unset_flag("missing")
    flag = await app.steering.set_flag("limits.max", {"n": 3})
    assert (await app.steering.flag("limits.max")).value == {"n": 3} == flag.value
    assert [f.name for f in await app.steering.flags()] == ["limits.max"]
