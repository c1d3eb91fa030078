"""Compensations: registered by finished steps, run in reverse as durable steps when a run fails, is
cancelled with compensation or undone; a failing compensation waits in the review queue."""

from __future__ import annotations

from typing import Any

import pytest

from crewline import App, Context, InvalidInput, InvalidRunState
from crewline.flows.recovery import Settlement
from crewline.flows.tools import tool

from ._drive import drive, make_due, step_once


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


class Ledger:
    """The outside world: invoices and holds created and voided, and whether voiding works today."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.void_fails = 0

    async def create_invoice(self, customer: str) -> str:
        self.calls.append(f"create {customer}")
        return f"inv-{customer}"

    async def void_invoice(self, invoice: str) -> str:
        if self.void_fails:
            self.void_fails -= 1
            raise RuntimeError("billing is down")
        self.calls.append(f"void {invoice}")
        return f"voided {invoice}"

    def hold(self, amount: int) -> dict[str, int]:
        self.calls.append(f"hold {amount}")
        return {"hold": amount}

    def release(self, held: dict[str, int]) -> None:
        self.calls.append(f"release {held['hold']}")


def billing(app: App, ledger: Ledger) -> None:
    async def check(customer: str) -> str:
        if customer.startswith("bad"):
            raise ValueError(f"no such customer {customer}")
        return customer

    async def lookup(customer: str) -> int:
        return 120

    @app.workflow()
    async def bill(ctx: Context, job: dict[str, Any]) -> str:
        amount = await ctx.step(lookup, job["customer"])
        await ctx.step(ledger.hold, amount, effect="idempotent", compensate=ledger.release)
        invoice = await ctx.step(
            ledger.create_invoice, job["customer"], effect="irreversible", compensate=ledger.void_invoice
        )
        if job.get("wait"):
            await ctx.wait_for("go")
        await ctx.step(check, job["then"], retry=None, effect="read")
        return str(invoice)


async def test_a_failed_run_runs_its_compensations_in_reverse_each_a_recorded_step(app: App) -> None:
    ledger = Ledger()
    billing(app, ledger)
    rid = await app.start("bill", {"customer": "c1", "then": "bad-c1"})
    run = await drive(app, rid)
    assert ledger.calls == ["hold 120", "create c1", "void inv-c1", "release 120"]
    assert run.status == "failed"
    assert run.error is not None and run.error["compensated"] == [3, 2]
    assert "compensated steps 3, 2" in run.error["message"] and run.error["type"] == "ValueError"
    steps = await app.steps(rid)
    assert [(s.kind, s.name, s.status) for s in steps[4:]] == [
        ("compensation", "Ledger.void_invoice", "done"),
        ("compensation", "Ledger.release", "done"),
    ]
    assert steps[4].output == "voided inv-c1"
    assert [s.compensation for s in steps[:3]] == [None, "Ledger.release", "Ledger.void_invoice"]


async def test_a_completed_run_is_undone_and_ends_cancelled_saying_so(app: App) -> None:
    ledger = Ledger()
    billing(app, ledger)
    rid = await app.start("bill", {"customer": "c2", "then": "c2"})
    assert (await drive(app, rid)).status == "completed"
    with pytest.raises(
        InvalidInput, match=r"step 1 of run .* has no compensation; steps with one: 2 \(.*hold"
    ):
        await app.undo(rid, steps=[1])
    assert (await app.get_run(rid)).status == "completed"  # nothing changed
    assert await app.undo(rid, steps=[3], by="ada") == "compensating"
    run = await drive(app, rid)
    assert run.status == "cancelled" and run.error is not None
    assert run.error["type"] == "Undone" and run.error["message"] == "undone by ada; compensated steps 3"
    assert ledger.calls == ["hold 120", "create c2", "void inv-c2"]
    with pytest.raises(InvalidRunState, match="already compensated"):
        await app.undo(rid)


async def test_cancel_with_compensation_of_a_waiting_run(app: App) -> None:
    ledger = Ledger()
    billing(app, ledger)
    rid = await app.start("bill", {"customer": "c3", "then": "c3", "wait": True})
    await step_once(app, "w1")
    assert (await app.get_run(rid)).status == "waiting"
    assert await app.cancel(rid, compensate=True) == "compensating"
    run = await drive(app, rid)
    assert run.status == "cancelled" and run.error is not None
    assert run.error["message"] == "cancelled by operator; compensated steps 3, 2"
    assert ledger.calls == ["hold 120", "create c3", "void inv-c3", "release 120"]
    with pytest.raises(InvalidRunState, match="already cancelled; nothing to cancel"):
        await app.cancel(rid, compensate=True)


async def test_nothing_to_compensate_is_refused_and_changes_nothing(app: App) -> None:
    @app.workflow()
    async def plain(ctx: Context) -> None:
        await ctx.wait_for("never")

    rid = await app.start("plain")
    await step_once(app, "w1")
    with pytest.raises(InvalidInput, match="has no finished step with a compensation; cancel it without"):
        await app.cancel(rid, compensate=True)
    with pytest.raises(InvalidInput, match="nothing to undo"):
        await app.undo(rid)
    assert (await app.get_run(rid)).status == "waiting"


async def test_a_failing_compensation_waits_for_an_operator_who_retries_or_marks_it_done(app: App) -> None:
    ledger = Ledger()
    ledger.void_fails = 10
    billing(app, ledger)
    rid = await app.start("bill", {"customer": "c4", "then": "bad"})
    await _until_waiting(app, rid)
    run = await app.get_run(rid)
    assert (run.wait_reason or "").startswith("compensation:")
    [req] = await app.reviews.list(run_id=rid)
    assert req.kind == "compensation" and req.preview["undoing_step"] == 3
    assert req.preview["error"]["message"] == "billing is down"
    with pytest.raises(InvalidInput, match="settled with retry, skip, done, not abandon"):
        await app.reviews.settle(req.id, Settlement("abandon", "ada"))
    ledger.void_fails = 3  # its three attempts fail once more
    await app.reviews.settle(req.id, Settlement("retry", "ada"))
    await _until_waiting(app, rid)
    [again] = await app.reviews.list(run_id=rid)
    assert again.id != req.id and again.step_no == req.step_no
    settled = await app.reviews.settle(again.id, Settlement("done", "ada", comment="voided by hand"))
    assert settled.status == "resolved" and settled.outcome == "done" and settled.edit == {"done_by": "ada"}
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None and run.error["compensated"] == [3, 2]
    assert ledger.calls == ["hold 120", "create c4", "release 120"]


async def test_a_tool_registers_its_compensation(app: App) -> None:
    undone: list[str] = []

    def cancel_booking(booking: str) -> None:
        undone.append(booking)

    @tool(effect="idempotent", compensate=cancel_booking)
    def book(room: str) -> str:
        return f"booking-{room}"

    @app.workflow()
    async def trip(ctx: Context) -> None:
        await ctx.tool(book, room="r1")
        raise RuntimeError("flight full")

    rid = await app.start("trip")
    run = await drive(app, rid)
    assert run.status == "failed" and undone == ["booking-r1"]


async def _until_waiting(app: App, rid: str) -> None:
    for i in range(20):
        await step_once(app, f"w{i}")
        if (await app.get_run(rid)).status == "waiting":
            return
        await make_due(app)
    raise AssertionError("the run never waited")


async def test_an_undo_asked_while_the_run_executes_is_not_lost(app: App) -> None:
    undone: list[int] = []

    def reserve(n: int) -> int:
        return n

    async def ask_undo(run_id: str) -> str:
        return await app.undo(run_id, by="ada")  # the run is executing right now

    @app.workflow()
    async def busy(ctx: Context) -> int:
        await ctx.step(reserve, 1, compensate=undone.append)
        return int(await ctx.step(ask_undo, ctx.run_id) == "compensation requested")

    rid = await app.start("busy")
    assert await step_once(app, "w1") == ["parked"]  # released for its compensations, not completed
    run = await drive(app, rid)
    assert run.status == "cancelled" and run.error is not None and run.error["type"] == "Undone"
    assert undone == [1] and run.output == 1
