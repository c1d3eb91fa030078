"""Steps: checkpoints, replay, retries, timeouts, determinism, typed outputs, idempotent starts."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import App, Context, InvalidInput, RetryPolicy, StepError
from crewline.errors import RunFailed

from ._drive import CrashPlan, drive, expire_leases, step_once

FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)


class Profile(BaseModel):
    id: str
    plan: str


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


def make_counted(app: App) -> Counter[str]:
    calls: Counter[str] = Counter()

    async def fetch(customer: str) -> Profile:
        calls["fetch"] += 1
        return Profile(id=customer, plan="pro")

    async def charge(amount: int) -> int:
        calls["charge"] += 1
        return amount * 100

    @app.workflow()
    async def onboard(ctx: Context, customer: str) -> dict[str, Any]:
        profile = await ctx.step(fetch, customer)
        assert isinstance(profile, Profile)  # replayed outputs come back typed, as live ones do
        cents = await ctx.step(charge, 42, effect="idempotent")
        return {"plan": profile.plan, "cents": cents}

    return calls


async def test_run_completes_and_records_each_step(app: App) -> None:
    calls = make_counted(app)
    rid = await app.start("onboard", "c1")
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == {"plan": "pro", "cents": 4200}
    steps = await app.steps(rid)
    assert [(s.step_no, s.name, s.status) for s in steps] == [
        (1, "make_counted.<locals>.fetch", "done"),
        (2, "make_counted.<locals>.charge", "done"),
    ]
    assert steps[0].output == {"id": "c1", "plan": "pro"}
    assert calls == {"fetch": 1, "charge": 1}


@pytest.mark.parametrize(
    "crash", [("after_step_commit", 1), ("after_step_commit", 2), ("before_run_completion", 2)]
)
async def test_finished_steps_never_run_again_after_a_crash(app: App, crash: tuple[str, int]) -> None:
    calls = make_counted(app)
    plan = CrashPlan([crash])
    app.engine.crash_hook = plan
    rid = await app.start("onboard", "c1")
    run = await drive(app, rid)
    assert plan.fired == [crash]
    assert run.status == "completed" and run.output == {"plan": "pro", "cents": 4200}
    assert calls == {"fetch": 1, "charge": 1}
    assert run.recoveries == 1


async def test_transient_errors_are_retried_with_attempts_recorded(app: App) -> None:
    attempts = Counter[str]()

    async def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError("upstream hiccup")
        return "ok"

    @app.workflow()
    async def wf(ctx: Context) -> str:
        return await ctx.step(flaky, retry=FAST)

    rid = await app.start(wf)
    run = await drive(app, rid)
    assert run.output == "ok"
    assert (await app.steps(rid))[0].attempts == 3


async def test_exhausted_retries_fail_the_run_with_the_last_error_and_step(app: App) -> None:
    async def broken(n: int) -> None:
        raise ValueError(f"bad value {n}")

    async def fine() -> int:
        return 1

    @app.workflow()
    async def wf(ctx: Context) -> None:
        await ctx.step(fine)
        await ctx.step(broken, 7, retry=FAST)

    rid = await app.start(wf)
    run = await drive(app, rid)
    assert run.status == "failed"
    assert run.error is not None
    assert (run.error["type"], run.error["message"], run.error["step"]) == ("ValueError", "bad value 7", 2)
    step = (await app.steps(rid))[1]
    assert step.status == "failed" and step.attempts == 3
    with pytest.raises(RunFailed, match="ValueError: bad value 7 \\(at step 2\\)"):
        await app.result(rid)


async def test_a_caught_step_failure_replays_identically(app: App) -> None:
    calls = Counter[str]()

    async def broken() -> None:
        calls["broken"] += 1
        raise KeyError("nope")

    async def after() -> str:
        return "after"

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            await ctx.step(broken, retry=RetryPolicy(max_attempts=1))
        except StepError as e:
            handled = e.error_type
        return handled + ":" + await ctx.step(after)

    app.engine.crash_hook = CrashPlan([("after_step_commit", 2)])
    rid = await app.start(wf)
    run = await drive(app, rid)
    assert run.output == "KeyError:after"
    assert calls["broken"] == 1


async def test_step_timeout_counts_as_a_failed_attempt(app: App) -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    @app.workflow()
    async def wf(ctx: Context) -> None:
        await ctx.step(slow, timeout="50ms", retry=RetryPolicy(max_attempts=2, initial_delay=0.001))

    rid = await app.start(wf)
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None and run.error["type"] == "TimeoutError"


async def test_sync_step_functions_run_in_a_thread(app: App) -> None:
    def blocking(x: int) -> int:
        return x + 1

    @app.workflow()
    async def wf(ctx: Context, x: int) -> int:
        return await ctx.step(blocking, x)

    run = await drive(app, await app.start(wf, 1))
    assert run.output == 2


async def test_changed_code_fails_with_a_determinism_error_naming_both_steps(app: App) -> None:
    async def first() -> int:
        return 1

    async def other() -> int:
        return 2

    version = {"n": 1}

    @app.workflow()
    async def wf(ctx: Context) -> int:
        a = await ctx.step(first)
        b = await ctx.step(first if version["n"] == 1 else other)
        return a + b

    app.engine.crash_hook = CrashPlan([("after_step_commit", 2)])
    rid = await app.start(wf)
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    version["n"] = 2  # a deploy changed the workflow under the run
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "DeterminismError"
    assert "first" in run.error["message"] and "other" in run.error["message"]


async def test_same_run_id_or_idempotency_key_returns_the_existing_run(app: App) -> None:
    make_counted(app)
    a = await app.start("onboard", "c1", run_id="my-run")
    b = await app.start("onboard", "c2", run_id="my-run")
    c = await app.start("onboard", "c1", idempotency_key="k1")
    d = await app.start("onboard", "c9", idempotency_key="k1")
    assert a == b == "my-run" and c == d and c != a
    assert len(await app.list_runs()) == 2


class Customer(BaseModel):
    id: str
    seats: int


async def test_bad_input_is_refused_before_any_run_exists(app: App) -> None:
    @app.workflow()
    async def signup(ctx: Context, customer: Customer) -> None:
        return None

    with pytest.raises(InvalidInput, match="seats"):
        await app.start(signup, {"id": "c1", "seats": "many"})
    assert await app.list_runs() == []


async def test_large_payloads_live_in_content_addressed_blobs(app: App) -> None:
    big = "x" * 50_000

    async def produce() -> str:
        return big

    @app.workflow()
    async def wf(ctx: Context) -> int:
        a = await ctx.step(produce)
        b = await ctx.step(produce)
        return len(a) + len(b)

    run = await drive(app, await app.start(wf))
    assert run.output == 100_000
    blobs = app.db.query(lambda c: c.all("SELECT size FROM blobs"))
    assert len(blobs) == 1 and blobs[0][0] > 50_000  # stored once for both steps
    assert app.db.query(lambda c: c.scalar("SELECT COUNT(*) FROM steps WHERE output IS NULL")) == 2
