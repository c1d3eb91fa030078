"""Shadow runs: every irreversible kind (ctx.step, @tool, an agent's tool call) records what it would have
done instead of doing it; reads and model calls run; nothing is compensated for a step that never ran."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from crewline import App, Context
from crewline.config import Settings
from crewline.flows.tools import tool
from crewline.models import Gateway
from crewline.models.call_log import call_rows
from crewline.testing import ScriptedModel, tool_call

from ._drive import drive, step_once


class World:
    """The outside world, counting what really happened to it."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refunds: list[int] = []
        self.voided: list[str] = []
        self.reads = 0


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def app(db_url: str, world: World) -> AsyncIterator[App]:
    model = ScriptedModel(default="ok")
    a = App(settings=Settings().with_(database_url=db_url))
    a.engine.models = Gateway.for_testing(model, a.db, wait_for_records=True)

    @tool(effect="irreversible", risk="high", shadow={"refund": "shadow"})
    async def refund(amount: int) -> dict[str, Any]:
        world.refunds.append(amount)
        return {"refund": "r-1"}

    async def send_email(to: str, idempotency_key: str) -> str:
        world.sent.append(to)
        return "msg-1"

    async def void(message_id: str) -> None:
        world.voided.append(message_id)

    async def lookup(customer: str) -> int:
        world.reads += 1
        return 42

    @a.workflow()
    async def settle(ctx: Context, customer: str) -> dict[str, Any]:
        balance = await ctx.step(lookup, customer)
        reply = await ctx.llm(messages=f"write to {customer}")
        sent = await ctx.step(
            send_email,
            customer,
            name="send_email",
            effect="irreversible",
            compensate=void,
            shadow="would-send",
        )
        refunded = await ctx.tool(refund, amount=balance)
        agent = await ctx.agent("refund them", tools=[refund], max_steps=3)
        if customer == "fail":
            raise RuntimeError("after the effects")
        return {"balance": balance, "reply": reply, "sent": sent, "refund": refunded, "agent": agent.output}

    model.add("draft", tool_call("refund", {"amount": 5}), "refunded")
    yield a
    await a.aclose()


async def test_a_shadow_run_records_every_irreversible_call_instead_of_making_it(
    app: App, world: World
) -> None:
    run_id = await app.start("settle", "ann", shadow=True)
    run = await drive(app, run_id)
    assert run.status == "completed" and run.shadow and run.shadow_of is None
    assert run.output["sent"] == "would-send" and run.output["refund"] == {"refund": "shadow"}
    assert run.output["reply"] == "draft" and world.reads == 1  # reads and model calls ran
    assert (world.sent, world.refunds) == ([], [])  # nothing irreversible happened
    would = [s.shadowed for s in await app.steps(run_id) if s.shadowed is not None]
    assert [w["name"] for w in would] == ["send_email", "refund", "refund"]
    email, tool_call_, agent_call = would
    assert email["arguments"] == {"args": ["ann"], "kwargs": {}}
    assert email["idempotency_key"] == f"{run_id}:3"
    assert tool_call_["arguments"] == {"amount": 42}
    assert agent_call["arguments"] == {"amount": 5}  # the agent's tool call
    assert all(s.compensation is None for s in await app.steps(run_id))
    assert await app.reviews.list() == []  # a held-back call asks nobody for approval
    # Its model calls are accounted apart: their own ledger scope, and marked in costs and metrics.
    calls = await app.db.read(lambda conn: call_rows(conn, run_id=run_id))
    assert len(calls) == 3 and {c["workflow"] for c in calls} == {"settle~shadow"}


class Seen:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def observe(self, event: Any) -> None:
        self.events.append(event)


async def test_a_shadow_runs_run_and_step_events_count_apart_from_the_live_workflows(app: App) -> None:
    seen = Seen()
    app.observers.add(seen)
    live, shadow = await app.start("settle", "ann"), await app.start("settle", "bob", shadow=True)
    await drive(app, shadow)
    for i in range(5):  # the live run goes as far as the refund's approval and waits there
        await step_once(app, f"w{i}")
    kinds = ("RunEvent", "StepEvent")
    labels = {(type(e).__name__, e.run_id, e.workflow) for e in seen.events if type(e).__name__ in kinds}
    assert {(k, w) for k, r, w in labels if r == live} == {(k, "settle") for k in kinds}
    assert {(k, w) for k, r, w in labels if r == shadow} == {(k, "settle~shadow") for k in kinds}


async def test_a_failing_shadow_run_compensates_nothing_it_did_not_do(app: App, world: World) -> None:
    run_id = await app.start("settle", "fail", shadow=True)
    run = await drive(app, run_id)
    assert run.status == "failed" and world.voided == [] and world.sent == []


def _shadowed_app(db_url: str, world: World, sample: float) -> App:
    section = {"settle": {"workflow": "settle_v2", "budget": "$1/day", "sample": sample}}
    a = App(settings=Settings().with_(database_url=db_url, sections={"shadow": section}))

    async def send(to: str) -> str:
        world.sent.append(to)
        return "sent"

    @a.workflow()
    async def settle(ctx: Context, customer: str) -> str:
        return await ctx.step(send, customer, effect="irreversible")

    @a.workflow()
    async def settle_v2(ctx: Context, customer: str) -> str:
        return await ctx.step(send, customer.upper(), effect="irreversible", shadow="held back")

    return a


async def test_a_live_trigger_starts_the_configured_shadow_beside_the_live_run(db_url: str) -> None:
    world = World()
    a = _shadowed_app(db_url, world, 1.0)
    try:
        live_id = await a.start("settle", "ann")
        shadow_id = f"{live_id}~shadow"
        live, shadow = await drive(a, live_id), await drive(a, shadow_id)
        assert (live.output, live.shadow) == ("sent", False)
        assert (shadow.workflow, shadow.shadow, shadow.shadow_of, shadow.output) == (
            "settle_v2",
            True,
            live_id,
            "held back",
        )
        assert world.sent == ["ann"]  # the shadow's call to send was held back
        listed = {r.id: r.shadow for r in await a.list_runs()}
        assert listed == {live_id: False, shadow_id: True}
    finally:
        a.close()
    none = _shadowed_app(db_url, World(), 0.0)
    try:
        assert len(await none.list_runs()) == 2
        await none.start("settle", "bob")
        assert len(await none.list_runs()) == 3  # sample = 0: no shadow
    finally:
        none.close()


async def test_promotion_switches_which_workflow_serves_the_live_triggers(db_url: str) -> None:
    from crewline.flows.shadow import demote, parse_shadow, promote

    world = World()
    a = _shadowed_app(db_url, world, 1.0)
    plan = parse_shadow(a.settings.sections["shadow"])["settle"]
    try:
        await a.db.write(lambda conn: promote(conn, plan, "ann", 0.0))
        promoted_id = await a.start("settle", "bo")
        run = await drive(a, promoted_id)
        assert (run.workflow, run.shadow, run.output) == ("settle_v2", False, "sent")
        assert world.sent == ["BO"]  # the candidate, live now, really sends
        assert [r.id for r in await a.list_runs()] == [promoted_id]  # and nothing shadows it
        assert await a.db.write(lambda conn: demote(conn, plan))
        back = await drive(a, await a.start("settle", "cy"))
        assert back.workflow == "settle" and world.sent == ["BO", "cy"]
    finally:
        a.close()


async def test_the_decorator_declares_a_shadow(db_url: str) -> None:
    sent: list[str] = []
    a = App(settings=Settings().with_(database_url=db_url))

    async def send(to: str) -> str:
        sent.append(to)
        return "sent"

    @a.workflow()
    async def notify(ctx: Context, to: str) -> str:
        return await ctx.step(send, to, effect="irreversible")

    @a.workflow(shadow_of="notify", daily_budget="$0.50")
    async def notify_v2(ctx: Context, to: str) -> str:
        return await ctx.step(send, to.title(), effect="irreversible", shadow="would send")

    try:
        live_id = await a.start("notify", "ann")
        shadow = await drive(a, f"{live_id}~shadow")
        await drive(a, live_id)
        assert (shadow.workflow, shadow.shadow_of, shadow.output) == ("notify_v2", live_id, "would send")
        assert sent == ["ann"]
        assert a.engine.shadow_plans["notify"].daily_budget == 0.5
    finally:
        a.close()
