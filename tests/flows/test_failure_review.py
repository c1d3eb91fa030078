"""``on_failure="review"``: a failed run waits in the review queue; an operator retries the failed step
(with edited tool arguments, or another model), skips it with an output, or abandons the run."""

from __future__ import annotations

from typing import Any

import pytest

from crewline import App, Context, InvalidInput, InvalidRunState
from crewline.errors import BadRequest
from crewline.flows.recovery import Settlement
from crewline.flows.tools import tool
from crewline.models import Gateway
from crewline.testing.scripted import ScriptedModel

from ._drive import drive, make_due, step_once


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


def shop(app: App, seen: list[str]) -> None:
    def refund(payment: str) -> None:
        seen.append(f"refund {payment}")

    def charge(card: str) -> str:
        seen.append(f"charge {card}")
        return f"pay-{card}"

    @tool(effect="idempotent")
    def ship(address: str, quantity: int) -> str:
        seen.append(f"ship {quantity} to {address}")
        if address == "nowhere":
            raise ValueError("no such address")
        return f"parcel-{address}"

    @app.workflow(on_failure="review")
    async def order(ctx: Context, address: str) -> str:
        await ctx.step(charge, "card-1", effect="idempotent", compensate=refund)
        parcel: str = await ctx.tool(ship, address=address, quantity=2)
        return parcel


async def failed_in_review(app: App, address: str = "nowhere") -> tuple[str, Any]:
    rid = await app.start("order", address)
    for i in range(10):
        await step_once(app, f"w{i}")
        run = await app.get_run(rid)
        if run.status == "waiting":
            [req] = await app.reviews.list(run_id=rid)
            return rid, req
        await make_due(app)
    raise AssertionError(f"run {rid} is {run.status}, not waiting for review")


async def test_the_review_shows_the_error_the_step_and_its_input(app: App) -> None:
    shop(app, [])
    rid, req = await failed_in_review(app)
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_reason == f"failure:{req.id}"
    assert (
        req.kind == "failure" and req.step_no == 2 and req.action == "run failed at step 2 (ship): ValueError"
    )
    assert req.preview["error"] == {"type": "ValueError", "message": "no such address"}
    assert req.preview["step_input"] == {"address": "nowhere", "quantity": 2}
    assert req.preview["output_type"] == "str" and req.preview["run_input"] == "nowhere"
    with pytest.raises(InvalidInput, match="failure review: settle it with `crewline review retry"):
        await app.reviews.approve(req.id, by="ada")


async def test_retry_with_edited_arguments_continues_the_same_run(app: App) -> None:
    seen: list[str] = []
    shop(app, seen)
    rid, req = await failed_in_review(app)
    with pytest.raises(InvalidInput, match="--input quantity must be a number like the recorded one"):
        await app.reviews.settle(
            req.id, Settlement("retry", "ada", arguments={"address": "x", "quantity": "many"})
        )
    with pytest.raises(InvalidInput, match="unknown arguments adress: use address, quantity"):
        await app.reviews.settle(req.id, Settlement("retry", "ada", arguments={"adress": "x"}))
    assert (await app.get_run(rid)).status == "waiting"  # nothing changed
    edited = {"address": "10 Main St", "quantity": 1}
    settled = await app.reviews.settle(req.id, Settlement("retry", "ada", arguments=edited))
    assert (
        settled.status == "resolved" and settled.outcome == "retry" and settled.edit == {"arguments": edited}
    )
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == "parcel-10 Main St"
    assert seen == ["charge card-1", *["ship 2 to nowhere"] * 3, "ship 1 to 10 Main St"]  # 3 attempts
    step = (await app.steps(rid))[1]
    assert step.status == "done" and step.input == edited
    with pytest.raises(InvalidRunState, match="already resolved by ada; nothing changed"):
        await app.reviews.settle(req.id, Settlement("retry", "ada"))


async def test_skip_needs_a_valid_output_and_abandon_compensates(app: App) -> None:
    seen: list[str] = []
    shop(app, seen)
    rid, req = await failed_in_review(app)
    with pytest.raises(InvalidInput, match="needs the output it returns instead \\(a str\\)"):
        await app.reviews.settle(req.id, Settlement("skip", "ada"))
    with pytest.raises(InvalidInput, match="the output of step 2 must be a str"):
        await app.reviews.settle(req.id, Settlement("skip", "ada", output={"parcel": 1}))
    await app.reviews.settle(req.id, Settlement("skip", "ada", output="parcel-by-hand"))
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == "parcel-by-hand"

    rid2, req2 = await failed_in_review(app)
    settled = await app.reviews.settle(req2.id, Settlement("abandon", "bo", comment="customer left"))
    assert settled.outcome == "abandon" and settled.comment == "customer left"
    run = await drive(app, rid2)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "ValueError" and run.error["compensated"] == [1]
    assert "abandoned by bo; compensated steps 1" in run.error["message"]
    assert seen[-1] == "refund pay-card-1"


async def test_retry_with_another_model_sets_the_runs_overrides(app: App) -> None:
    shop(app, [])
    rid, req = await failed_in_review(app)
    await app.reviews.settle(req.id, Settlement("retry", "ada", overrides={"model": "strong"}))
    assert (await app.get_run(rid)).overrides == {"model": "strong"}


async def test_a_failed_model_call_is_retried_not_skipped(app: App) -> None:
    model = ScriptedModel(BadRequest("the prompt is malformed"), "fixed")
    app.engine.models = Gateway.for_testing(model)

    @app.workflow(on_failure="review")
    async def summarise(ctx: Context) -> str:
        return str(await ctx.llm(messages="summarise this"))

    rid = await app.start("summarise")
    await step_once(app, "w1")
    [req] = await app.reviews.list(run_id=rid)
    assert req.kind == "failure" and req.preview["error"]["type"] == "BadRequest"
    with pytest.raises(InvalidInput, match="step 1 is of kind llm: only a step or a tool call is skipped"):
        await app.reviews.settle(req.id, Settlement("skip", "ada", output="made up"))
    await app.reviews.settle(req.id, Settlement("retry", "ada"))
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == "fixed" and model.remaining == 0
