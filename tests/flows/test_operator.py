"""Irreversible steps with unknown outcomes, resolved by an operator; forks from a step."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from crewline import App, Context, InvalidInput, InvalidRunState
from crewline.errors import RunExists

from ._drive import CrashPlan, drive, expire_leases, step_once


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


def invoice_workflow(app: App) -> Counter[str]:
    sent = Counter[str]()

    async def lookup(customer: str) -> int:
        sent["lookup"] += 1
        return 120

    async def create_invoice(customer: str, amount: int, idempotency_key: str) -> str:
        sent[idempotency_key] += 1
        return f"inv-{customer}-{amount}"

    async def notify(invoice: str) -> str:
        sent["notify"] += 1
        return f"notified {invoice}"

    @app.workflow()
    async def bill(ctx: Context, customer: str) -> str:
        amount = await ctx.step(lookup, customer)
        invoice = await ctx.step(
            create_invoice, customer, amount, effect="irreversible", idempotency_key=f"invoice-{customer}"
        )
        return await ctx.step(notify, invoice)

    return sent


async def crash_after_intent(app: App) -> str:
    app.engine.crash_hook = CrashPlan([("after_intent", 2)])
    rid = await app.start("bill", "c1")
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    assert await step_once(app, "w2") == ["parked"]
    return rid


async def test_crash_after_intent_waits_for_an_operator(app: App) -> None:
    sent = invoice_workflow(app)
    rid = await crash_after_intent(app)
    run = await app.get_run(rid)
    assert run.status == "waiting"
    assert run.wait_reason == "outcome unknown: step 2 (invoice_workflow.<locals>.create_invoice)"
    assert [r.id for r in await app.list_runs(state="waiting")] == [rid]
    assert sent["invoice-c1"] == 0
    assert await step_once(app, "w3") == []  # never retried blindly
    step = (await app.steps(rid))[1]
    assert step.status == "intent" and step.output == {"idempotency_key": "invoice-c1"}


@pytest.mark.parametrize(
    ("outcome", "status", "invoices"),
    [("retry", "completed", 1), ("done", "completed", 0), ("fail", "failed", 0)],
)
async def test_resolving_an_unknown_outcome(app: App, outcome: str, status: str, invoices: int) -> None:
    sent = invoice_workflow(app)
    rid = await crash_after_intent(app)
    await app.resolve(rid, 2, outcome, "inv-from-operator")  # type: ignore[arg-type]
    run = await drive(app, rid)
    assert run.status == status
    assert sent["invoice-c1"] == invoices
    if outcome == "done":
        assert run.output == "notified inv-from-operator"
    if outcome == "fail":
        assert run.error is not None and run.error["type"] == "OutcomeFailed" and run.error["step"] == 2


async def test_a_step_left_unknown_again_after_a_retry_asks_the_operator_again(app: App) -> None:
    sent = invoice_workflow(app)
    rid = await crash_after_intent(app)
    first = await app.reviews.list(run_id=rid)
    await app.reviews.resolve(first[0].id, "retry", by="ops")
    app.engine.crash_hook = CrashPlan([("after_intent", 2)])  # its worker dies again after the intent
    assert await step_once(app, "w3") == ["crashed"]
    await expire_leases(app)
    assert await step_once(app, "w4") == ["parked"]
    again = await app.reviews.list(run_id=rid)  # pending ones
    assert [r.kind for r in again] == ["outcome_unknown"] and again[0].id != first[0].id
    await app.reviews.resolve(again[0].id, "retry", by="ops")
    run = await drive(app, rid)
    assert run.status == "completed" and sent["invoice-c1"] == 1
    settled = await app.reviews.list(run_id=rid, status="resolved")
    assert sorted(r.outcome or "" for r in settled) == ["retry", "retry"]


async def test_resolve_refuses_runs_and_steps_that_are_not_unknown(app: App) -> None:
    invoice_workflow(app)
    rid = await crash_after_intent(app)
    with pytest.raises(InvalidRunState, match="step 1"):
        await app.resolve(rid, 1, "done")
    await app.resolve(rid, 2, "retry")
    with pytest.raises(InvalidRunState, match="not waiting for an outcome"):
        await app.resolve(rid, 2, "retry")


async def test_fork_reuses_checkpoints_before_the_step(app: App) -> None:
    sent = invoice_workflow(app)
    rid = await app.start("bill", "c1")
    await drive(app, rid)
    fork = await app.fork(rid, 3)
    run = await drive(app, fork)
    assert run.forked_from == rid and run.fork_step == 3
    assert run.output == "notified inv-c1-120"
    assert sent == {"lookup": 1, "invoice-c1": 1, "notify": 2}  # only step 3 ran again
    steps = await app.steps(fork)
    assert [s.step_no for s in steps] == [1, 2, 3]


async def test_fork_refuses_steps_out_of_range(app: App) -> None:
    invoice_workflow(app)
    rid = await app.start("bill", "c1")
    await drive(app, rid)
    with pytest.raises(InvalidInput, match="steps 1 to 3"):
        await app.fork(rid, 9)


@pytest.mark.parametrize("from_step", [1, 3])
async def test_fork_refuses_the_id_of_an_existing_run_and_writes_nothing(app: App, from_step: int) -> None:
    sent = invoice_workflow(app)
    rid = await app.start("bill", "c1")
    await drive(app, rid)
    pending = await app.start("bill", "c2", run_id="taken")
    with pytest.raises(RunExists, match="a run with id 'taken' already exists"):
        await app.fork(rid, from_step, new_run_id="taken")
    assert await app.steps(pending) == []
    assert (await app.get_run(pending)).forked_from is None
    await drive(app, pending)  # runs its own course: nothing of the other run was replayed
    assert sent["invoice-c2"] == 1
    finished = await app.steps(pending)
    with pytest.raises(RunExists):
        await app.fork(rid, from_step, new_run_id="taken")
    assert await app.steps(pending) == finished
