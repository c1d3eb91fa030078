"""`crewline runs undo`, `runs cancel --compensate` and `review retry|skip|abandon|done` as an operator types
them: runs driven in-process, the decisions taken by the real command."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context, RetryPolicy, Settings

from .flows._drive import drive, make_due, step_once
from .test_cli import cli  # noqa: F401  (the fixture)

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    a = App(settings=Settings().with_(database_url=sqlite_url))
    undone: list[str] = []
    a.undone = undone  # type: ignore[attr-defined]

    def book(room: str) -> str:
        return f"booking-{room}"

    def unbook(booking: str) -> None:
        undone.append(booking)

    def pay(amount: int) -> int:
        if amount < 0:
            raise ValueError(f"cannot pay {amount}")
        return amount

    @a.workflow(on_failure="review")
    async def trip(ctx: Context, amount: int) -> int:
        await ctx.step(book, "r1", effect="idempotent", compensate=unbook)
        if amount == 0:
            await ctx.wait_for("go")
        paid: int = await ctx.step(pay, amount, retry=ONCE)
        return paid

    yield a
    a.close()


async def in_review(app: App, amount: int) -> tuple[str, str]:
    rid = await app.start("trip", amount)
    for i in range(5):
        await step_once(app, f"w{i}")
        reqs = await app.reviews.list(run_id=rid)
        if reqs:
            return rid, reqs[0].id
        await make_due(app)
    raise AssertionError("no review")


async def test_skip_a_failed_step_with_an_output(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid, req = await in_review(app, -5)
    shown = cli("review", "show", req).stdout
    assert "action    run failed at step 2 (" in shown and "cannot pay -5" in shown
    assert f"settle    crewline review retry|skip|abandon {req}" in shown
    bad = cli("review", "skip", req, "--output", '"lots"', check=2)
    assert bad.stderr.strip().splitlines() == [
        "crewline: error: the output of step 2 must be a int: input: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
    wrong = cli("review", "done", req, check=2)
    assert "a failure review is settled with retry, skip, abandon, not done" in wrong.stderr
    assert cli("review", "skip", req, "--output", "5", "--by", "ada").stdout.strip() == (
        f"{req} settled (skip) by ada; run {rid} resumes"
    )
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == 5


async def test_abandon_runs_the_compensations(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid, req = await in_review(app, -1)
    cli("review", "abandon", req, "--comment", "customer left")
    run = await drive(app, rid)
    assert run.status == "failed" and app.undone == ["booking-r1"]  # type: ignore[attr-defined]
    shown = cli("runs", "show", rid).stdout
    assert "compensated steps 1" in shown and "(undo: " in shown and "compensation" in shown


async def test_cancel_with_compensation_and_undo_refusals(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid = await app.start("trip", 0)
    await step_once(app, "w1")
    refused = cli("runs", "undo", rid, "--step", "2", check=2)
    assert refused.stderr.strip().splitlines() == [
        f"crewline: error: step 2 of run {rid} has no compensation; steps with one: 1 (app.<locals>.book, "
        "undone by app.<locals>.unbook)"
    ]
    assert (await app.get_run(rid)).status == "waiting"
    assert cli("runs", "cancel", rid, "--compensate").stdout.strip() == "compensating"
    run = await drive(app, rid)
    assert run.status == "cancelled" and app.undone == ["booking-r1"]  # type: ignore[attr-defined]
    again = cli("runs", "undo", rid, check=2)
    assert "was already compensated" in again.stderr
    plain: Any = await app.start("trip", 0)
    await step_once(app, "w2")
    await app.cancel(plain)
    late = cli("runs", "cancel", plain, "--compensate", check=2)
    assert f"run {plain} is already cancelled; nothing to cancel" in late.stderr
