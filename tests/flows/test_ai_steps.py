"""AI steps: durable model calls that are never paid twice, agents, and workflow budgets under each policy.

The model is the fake provider on loopback (real HTTP, OpenAI wire format); its request log counts calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import App, ConfigError, Context, RetryPolicy, Settings, tool
from crewline.models import Gateway, ModelsConfig
from crewline.testing import FakeProvider, Fault

from ._drive import CrashPlan, drive, expire_leases, step_once

PRICE = {"input": 1000.0, "output": 1000.0}  # USD per million tokens: $0.001 a token, easy to reason about


class Triage(BaseModel):
    urgency: str
    summary: str


def models_table(url: str) -> dict[str, Any]:
    return {
        "default": "cheap",
        "max_tokens": 50,
        "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"}},
        "tiers": {
            "order": ["local", "cheap", "strong"],
            "local": "fake/small",
            "cheap": "fake/mid",
            "strong": "fake/big",
        },
        "prices": {"fake/small": {"input": 0, "output": 0}, "fake/mid": PRICE, "fake/big": PRICE},
        "retry": {"attempts": 1},
    }


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


@pytest.fixture
async def app(db_url: str, fake: FakeProvider) -> Any:
    a = App(settings=Settings().with_(database_url=db_url))
    a.engine.models = Gateway(
        ModelsConfig.parse(models_table(fake.url)),
        a.db,
        environ={"FAKE_KEY": "sk-test"},
        wait_for_records=True,
    )
    yield a
    await a.aclose()


def model_calls(fake: FakeProvider) -> list[str]:
    return [r.body["model"] for r in fake.requests if r.path.endswith("/chat/completions")]


async def test_a_model_call_is_never_paid_twice_across_a_crash(app: App, fake: FakeProvider) -> None:
    fake.reply(json={"urgency": "high", "summary": "refund"}, input_tokens=10, output_tokens=5)
    fake.reply("Dear Ada, your refund is on its way.", input_tokens=20, output_tokens=10)

    @app.workflow()
    async def triage(ctx: Context, body: str) -> dict[str, Any]:
        t = await ctx.llm(messages=f"Triage: {body}", output=Triage, model="cheap")
        assert isinstance(t, Triage)
        draft = await ctx.llm(messages=f"Reply to: {body} ({t.urgency})", model="strong")
        return {"urgency": t.urgency, "draft": draft}

    app.engine.crash_hook = CrashPlan([("after_step_commit", 1), ("after_step_commit", 2)])
    rid = await app.start(triage, "Where is my refund?")
    run = await drive(app, rid)
    assert run.output == {"urgency": "high", "draft": "Dear Ada, your refund is on its way."}
    assert model_calls(fake) == ["mid", "big"]  # two crashes, still one call each
    steps = await app.steps(rid)
    assert [(s.kind, s.name) for s in steps] == [("llm", "llm"), ("llm", "llm")]
    first = steps[0].output
    assert (first["provider"] + "/" + first["model"], first["usage"]["input_tokens"], first["cost"]) == (
        "fake/mid",
        10,
        pytest.approx(0.015),
    )
    assert steps[0].input["model"] == "cheap" and "Where is my refund?" in str(steps[0].input["messages"])
    calls = app.db.query(lambda c: c.all("SELECT run_id, step FROM model_calls ORDER BY step"))
    assert calls == [(rid, 1), (rid, 2)]


LOOKUPS: list[str] = []


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    LOOKUPS.append(order_id)
    return {"id": order_id, "status": "shipped"}


async def test_an_agent_resumes_mid_loop_without_repeating_turns_or_tools(
    app: App, fake: FakeProvider
) -> None:
    LOOKUPS.clear()
    fake.reply(tool_calls=[("lookup_order", {"order_id": "o-1"})])
    fake.reply(tool_calls=[("lookup_order", {"order_id": "o-2"}), ("lookup_order", {"order_id": 3})])
    fake.reply("Both orders have shipped.")

    @app.workflow()
    async def support(ctx: Context, goal: str) -> dict[str, Any]:
        result = await ctx.agent(goal, tools=[lookup_order], model="cheap", max_steps=5)
        return {"status": result.status, "output": result.output, "calls": result.tool_calls}

    # Crash after the first tool call and again after the second model turn.
    app.engine.crash_hook = CrashPlan([("after_step_commit", 2), ("after_step_commit", 3)])
    rid = await app.start(support, "Where are orders o-1 and o-2?")
    run = await drive(app, rid)
    assert run.output == {"status": "completed", "output": "Both orders have shipped.", "calls": 3}
    assert len(model_calls(fake)) == 3 and LOOKUPS == ["o-1", "o-2"]
    steps = await app.steps(rid)
    assert [(s.kind, s.name) for s in steps] == [
        ("llm", "agent:turn"),
        ("tool", "lookup_order"),
        ("llm", "agent:turn"),
        ("tool", "lookup_order"),
        ("llm", "agent:turn"),
    ]
    # The bad call (order_id 3 is not a string) went back to the model as an error, not a crash.
    last_messages = str(fake.requests[-1].body["messages"])
    assert "arguments for tool lookup_order are not valid" in last_messages


async def test_an_agent_stops_at_max_steps_with_a_status_that_is_not_success(
    app: App, fake: FakeProvider
) -> None:
    LOOKUPS.clear()
    fake.reply(tool_calls=[("lookup_order", {"order_id": "o-1"})], times=5)

    @app.workflow()
    async def loop(ctx: Context) -> dict[str, Any]:
        result = await ctx.agent("keep looking", tools=[lookup_order], model="cheap", max_steps=2)
        return {"status": result.status, "ok": result.ok, "turns": result.turns}

    run = await drive(app, await app.start(loop))
    assert run.output == {"status": "max_steps", "ok": False, "turns": 2}


def budget_workflow(app: App, on_budget: str) -> None:
    # A call costs $0.02; its reservation holds $0.04 (the input-token ceiling of "call N" is 30 tokens,
    # plus 10 output tokens, at $0.001 a token): two calls fit in $0.07, the third's worst case does not.
    @app.workflow(name=f"spend_{on_budget}", budget="$0.07/run", on_budget=on_budget)
    async def spend(ctx: Context) -> list[str]:
        out = []
        for i in range(3):
            out.append(await ctx.llm(messages=f"call {i}", model="cheap", max_tokens=10))
        return out


async def test_a_model_call_rides_out_a_provider_outage_within_its_retry_policy(
    app: App, fake: FakeProvider
) -> None:
    fake.fault(Fault.http(503, "overloaded", path="/chat/completions", times=2))
    fake.reply("back up")

    @app.workflow()
    async def patient(ctx: Context) -> str:
        quick = RetryPolicy(max_attempts=3, initial_delay=0.01)
        return str(await ctx.llm(messages="hi", model="cheap", retry=quick))

    run = await drive(app, await app.start(patient))
    assert run.status == "completed" and run.output == "back up"
    assert len(model_calls(fake)) == 3


async def test_a_bad_request_fails_the_step_at_once(app: App, fake: FakeProvider) -> None:
    fake.fault(Fault.http(400, "unknown field", path="/chat/completions", times=3))

    @app.workflow()
    async def hasty(ctx: Context) -> str:
        return str(await ctx.llm(messages="hi", model="cheap"))

    run = await drive(app, await app.start(hasty))
    assert run.status == "failed" and run.error is not None and run.error["type"] == "BadRequest"
    assert len(model_calls(fake)) == 1


async def test_budget_fail_stops_the_run_before_overspending(app: App, fake: FakeProvider) -> None:
    fake.reply("ok", input_tokens=10, output_tokens=10, times=5)  # $0.02 a call; worst case $0.04
    budget_workflow(app, "fail")
    run = await drive(app, await app.start("spend_fail"))
    assert run.status == "failed" and run.error is not None and run.error["type"] == "BudgetExceeded"
    assert len(model_calls(fake)) == 2  # the third could have crossed $0.07: refused before it was sent
    assert "run:" in run.error["message"]


async def test_budget_degrade_moves_to_cheaper_tiers(app: App, fake: FakeProvider) -> None:
    fake.reply("ok", input_tokens=10, output_tokens=10, times=5)
    budget_workflow(app, "degrade")
    run = await drive(app, await app.start("spend_degrade"))
    assert run.status == "completed"
    assert model_calls(fake) == ["mid", "mid", "small"]  # the free local tier takes over


async def test_budget_pause_waits_in_the_review_queue(app: App, fake: FakeProvider) -> None:
    fake.reply("ok", input_tokens=10, output_tokens=10, times=5)
    budget_workflow(app, "pause")
    rid = await app.start("spend_pause")
    await drive_until_parked(app, rid)
    [req] = await app.reviews.list()
    assert req.kind == "budget" and req.preview["budget"] == f"run:{rid}"
    assert (await app.get_run(rid)).status == "waiting"
    app.models.ledger.set_limit(f"run:{rid}", 1.0)  # type: ignore[union-attr]  # the operator raises it
    await app.reviews.approve(req.id, by="owner", comment="worth it")
    run = await drive(app, rid)
    assert run.status == "completed" and len(model_calls(fake)) == 3


async def test_a_model_without_a_price_never_passes_a_workflow_budget(app: App, fake: FakeProvider) -> None:
    @app.workflow(budget="$0.05/run", on_budget="pause")
    async def unpriced(ctx: Context) -> str:
        return str(await ctx.llm(messages="hi", model="fake/no-price-listed", max_tokens=100_000))

    run = await drive(app, await app.start("unpriced"))
    assert run.status == "failed" and run.error is not None and run.error["type"] == "PriceUnknown"
    assert 'models.prices."fake/no-price-listed"' in run.error["message"]
    assert model_calls(fake) == [] and await app.reviews.list() == []  # refused, not parked for a raise


async def test_concurrent_runs_never_overspend_the_workflow_budget(db_url: str, fake: FakeProvider) -> None:
    table = models_table(fake.url)
    table["budgets"] = {"workflow": {"burst": 0.1}}
    app = App(settings=Settings().with_(database_url=db_url, poll_interval=0.02))
    app.engine.models = Gateway(ModelsConfig.parse(table), app.db, environ={"FAKE_KEY": "sk-test"})
    fake.reply("ok", input_tokens=10, output_tokens=10, times=100)

    @app.workflow()
    async def burst(ctx: Context, i: int) -> str:
        return await ctx.llm(messages=f"call {i}", model="cheap", max_tokens=10)

    try:
        ids = [await app.start(burst, i) for i in range(12)]
        workers = [app.worker(concurrency=6, worker_id=f"w{i}") for i in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        statuses = []
        for rid in ids:
            while (run := await app.get_run(rid)).status not in ("completed", "failed"):
                await asyncio.sleep(0.02)
            statuses.append(run.status)
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        await app.models.flush()
        spent = app.models.ledger.status("workflow:burst")["spent"]  # type: ignore[union-attr]
        # $0.02 each, each holding $0.04 while in flight: how many fit depends on the overlap, never more.
        completed = statuses.count("completed")
        assert spent <= 0.1 + 1e-9 and spent == pytest.approx(0.02 * completed)
        assert completed == len(model_calls(fake)) >= 2
    finally:
        await app.aclose()


async def drive_until_parked(app: App, rid: str) -> None:
    for i in range(10):
        await step_once(app, f"w{i}")
        if (await app.get_run(rid)).status == "waiting":
            return
    raise AssertionError("the run never parked")


async def test_a_daily_budget_caps_the_workflow_across_runs(app: App, fake: FakeProvider) -> None:
    fake.reply("ok", input_tokens=10, output_tokens=10, times=5)  # $0.02 a call

    @app.workflow(daily_budget="$0.07")  # a call's reservation holds $0.042: two fit, the third does not
    async def digest(ctx: Context, i: int) -> str:
        return await ctx.llm(messages=f"digest {i}", model="cheap", max_tokens=10)

    outcomes = []
    for i in range(3):
        outcomes.append((await drive(app, await app.start(digest, i))).status)
    assert outcomes == ["completed", "completed", "failed"]  # the third could cross $0.07 today
    day_scope = app.models.ledger.workflow_day("digest")  # type: ignore[union-attr]
    status = app.models.ledger.status(day_scope)  # type: ignore[union-attr]
    assert status["limit"] == pytest.approx(0.07) and status["spent"] == pytest.approx(0.04)
    assert len(model_calls(fake)) == 2


async def test_concurrent_runs_degrade_together_without_overspending(db_url: str, fake: FakeProvider) -> None:
    app = App(settings=Settings().with_(database_url=db_url, poll_interval=0.02))
    app.engine.models = Gateway(
        ModelsConfig.parse(models_table(fake.url)), app.db, environ={"FAKE_KEY": "sk-test"}
    )
    fake.reply("ok", input_tokens=10, output_tokens=10, times=100)  # $0.02 a call on the paid tiers

    @app.workflow(daily_budget="$0.10", on_budget="degrade")
    async def burst(ctx: Context, i: int) -> str:
        return await ctx.llm(messages=f"call {i}", model="cheap", max_tokens=10)

    try:
        ids = [await app.start(burst, i) for i in range(12)]
        workers = [app.worker(concurrency=6, worker_id=f"w{i}") for i in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        outputs = [await app.result(rid, timeout=60) for rid in ids]
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        await app.models.flush()
        assert outputs == ["ok"] * 12  # every run finished: the ones past the budget on the free tier
        models = model_calls(fake)
        # Each paid call holds $0.04 while in flight and settles at $0.02: how many fit depends on how the
        # twelve overlap, never more than the budget.
        paid = models.count("mid")
        assert paid >= 2 and paid + models.count("small") == 12
        spent = app.models.ledger.status(app.models.ledger.workflow_day("burst"))["spent"]  # type: ignore[union-attr]
        assert spent <= 0.1 + 1e-9 and spent == pytest.approx(0.02 * paid)
    finally:
        await app.aclose()


async def test_a_replayed_model_call_does_not_render_its_prompt_again(
    db_url: str, fake: FakeProvider, tmp_path: Any
) -> None:
    from crewline.flows import prompts

    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.md").write_text("---\nparams: [name]\n---\nSay hello to {{ name }}.\n")
    app = App(settings=Settings().with_(database_url=db_url, project_dir=tmp_path))
    app.engine.models = Gateway(
        ModelsConfig.parse(models_table(fake.url)), app.db, environ={"FAKE_KEY": "sk-test"}
    )
    version = prompts.resolve(app.db, "greet").version
    prompts.set_label(app.db, "greet", "candidate", version)
    fake.reply("Hello, Ada!")
    fake.reply("Bye!")

    @app.workflow()
    async def greet(ctx: Context, name: str) -> list[str]:
        hello = await ctx.llm(prompt="greet@candidate", input={"name": name}, model="cheap")
        bye = await ctx.llm(messages="Say bye", model="cheap")
        return [hello, bye]

    try:
        app.engine.crash_hook = CrashPlan([("after_step_commit", 1)])
        rid = await app.start(greet, "Ada")
        assert await step_once(app, "w1") == ["crashed"]
        await expire_leases(app)
        prompts.remove_label(app.db, "greet", "candidate")  # the label is gone before the replay
        run = await drive(app, rid)
        assert run.output == ["Hello, Ada!", "Bye!"] and len(model_calls(fake)) == 2
        assert (await app.steps(rid))[0].output["prompt"] == f"greet@{version}"
    finally:
        await app.aclose()


@pytest.mark.parametrize("budget", ["nan", float("nan"), "inf", "$-1/run", "lots"])
def test_a_workflow_budget_must_be_a_finite_amount(budget: object) -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(ConfigError, match="budget"):

        @app.workflow(budget=budget)  # type: ignore[arg-type]
        async def spend(ctx: Context) -> None:
            pass
