"""The review queue: approvals with edits, timeouts and each on_timeout policy, risk policy, unknown outcomes."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import App, Context, Decision, InvalidInput, InvalidRunState, Settings
from crewline.flows.review_requests import edit_problems, preview_schema, recent_decisions

from ._drive import CrashPlan, drive, expire_leases, make_due, step_once


class Draft(BaseModel):
    to: str
    body: str


def make_app(db_url: str, review: dict[str, Any] | None = None) -> App:
    return App(settings=Settings().with_(database_url=db_url, sections={"review": review or {}}))


@pytest.fixture
def app(db_url: str) -> Any:
    a = make_app(db_url)
    yield a
    a.close()


def reply_workflow(app: App, sent: list[Any], **approve: Any) -> None:
    @app.workflow()
    async def reply(ctx: Context, to: str) -> dict[str, Any]:
        draft = Draft(to=to, body="Thanks, we will refund you.")
        decision = await ctx.approve("send reply", preview=draft, **approve)
        if decision.approved:
            final = decision.edited or draft
            assert isinstance(final, Draft)
            sent.append(final.body)
        return {"status": decision.status, "by": decision.decided_by, "comment": decision.comment}


async def test_approval_with_an_edit_continues_with_the_edit(app: App) -> None:
    sent: list[Any] = []
    reply_workflow(app, sent)
    rid = await app.start("reply", "ada@example.com")
    assert await step_once(app, "w1") == ["parked"]
    run = await app.get_run(rid)
    [req] = await app.reviews.list()
    assert run.status == "waiting" and run.wait_reason == f"approval:{req.id}"
    assert (req.kind, req.action, req.risk, req.status) == ("approval", "send reply", "medium", "pending")
    assert req.preview == {"to": "ada@example.com", "body": "Thanks, we will refund you."}
    assert req.preview_type is not None and req.preview_type.endswith(":Draft")
    assert req.context["steps_so_far"] == 0
    edit = {"to": "ada@example.com", "body": "Refund issued today."}
    decided = await app.reviews.approve(
        req.id, by="sam", comment="softer", edit=edit, seen_hash=req.content_hash
    )
    assert (decided.status, decided.decided_by, decided.shown_hash) == ("approved", "sam", req.content_hash)
    run = await drive(app, rid)
    assert run.output == {"status": "approved", "by": "sam", "comment": "softer"}
    assert sent == ["Refund issued today."]


async def test_rejection_and_double_decisions(app: App) -> None:
    sent: list[Any] = []
    reply_workflow(app, sent)
    rid = await app.start("reply", "bob@example.com")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    with pytest.raises(InvalidInput, match="differs from what you reviewed"):
        await app.reviews.approve(req.id, by="sam", seen_hash="0" * 64)
    with pytest.raises(InvalidInput, match="body: Field required"):
        await app.reviews.approve(req.id, by="sam", edit={"to": "x"})
    assert (await app.reviews.get(req.id)).status == "pending"  # a refused decision records nothing
    await app.reviews.reject(req.id, by="sam", comment="wrong tone")
    with pytest.raises(InvalidRunState, match="already rejected"):
        await app.reviews.approve(req.id, by="kim")
    run = await drive(app, rid)
    assert run.output == {"status": "rejected", "by": "sam", "comment": "wrong tone"} and sent == []


@pytest.mark.parametrize(
    ("on_timeout", "risk", "status", "sent_count"),
    [("reject", None, "expired", 0), ("approve", None, "approved", 1), ("approve", "high", None, 0)],
)
async def test_timeout_policies(
    app: App, on_timeout: str, risk: str | None, status: str | None, sent_count: int
) -> None:
    sent: list[Any] = []
    reply_workflow(app, sent, timeout="1h", on_timeout=on_timeout, risk=risk)
    rid = await app.start("reply", "ada@example.com")
    await step_once(app, "w1")
    await make_due(app)  # a day passes
    await step_once(app, "w2")
    run = await app.get_run(rid)
    [req] = await app.reviews.list(status=None)
    if status is None:  # high risk is never approved by the clock: it escalates and keeps waiting
        assert run.status == "waiting" and req.escalated and req.status == "pending" and req.risk == "high"
        assert (await app.reviews.list())[0].id == req.id
        await app.reviews.approve(req.id, by="owner")
        run = await drive(app, rid)
        assert run.output["by"] == "owner"
    else:
        assert run.status == "completed" and run.output["status"] == status and run.output["by"] == "timeout"
        assert req.status == status and req.decided_by == "timeout"
    assert len(sent) == (1 if status is None else sent_count)


async def test_escalate_keeps_the_request_open(app: App) -> None:
    reply_workflow(app, [], timeout="10m", on_timeout="escalate")
    rid = await app.start("reply", "ada@example.com")
    await step_once(app, "w1")
    await make_due(app)
    await step_once(app, "w2")
    req = (await app.reviews.list())[0]
    assert req.escalated and (await app.get_run(rid)).wake_at is None
    await app.reviews.reject(req.id, by="owner")
    assert (await drive(app, rid)).output["status"] == "rejected"


async def test_risk_policy_low_runs_automatically_and_the_stricter_rule_wins(db_url: str) -> None:
    app = make_app(db_url, {"default": "medium", "risk": {"send *": "low", "refund*": "high"}})
    decisions: list[Decision] = []

    @app.workflow()
    async def wf(ctx: Context) -> None:
        decisions.append(await ctx.approve("send digest", preview="hi"))
        decisions.append(await ctx.approve("send invoice", preview="hi", risk="medium"))

    try:
        rid = await app.start(wf)
        await step_once(app, "w1")
        [req] = await app.reviews.list()
        assert req.action == "send invoice" and req.risk == "medium"  # declared medium beats the policy's low
        await app.reviews.approve(req.id, by="me")
        await drive(app, rid)
        assert decisions[0].status == "auto" and decisions[0].decided_by == "policy"
        assert app.engine.risk_policy.risk_for("refund customer", "low") == "high"
    finally:
        app.close()


async def test_unknown_outcomes_land_in_the_same_queue(app: App) -> None:
    calls = Counter[str]()

    async def charge(idempotency_key: str) -> str:
        calls[idempotency_key] += 1
        return "charged"

    @app.workflow()
    async def bill(ctx: Context) -> str:
        return await ctx.step(charge, effect="irreversible", idempotency_key="charge-1")

    app.engine.crash_hook = CrashPlan([("after_intent", 1)])
    rid = await app.start(bill)
    await step_once(app, "w1")
    await expire_leases(app)
    await step_once(app, "w2")
    [req] = await app.reviews.list()
    assert (
        req.kind == "outcome_unknown"
        and req.risk == "high"
        and req.preview == {"idempotency_key": "charge-1"}
    )
    with pytest.raises(InvalidInput, match="runs resolve"):
        await app.reviews.approve(req.id, by="me")
    resolved = await app.reviews.resolve(req.id, "done", by="me", output="charged (verified in the PSP)")
    assert resolved.status == "resolved" and resolved.outcome == "done"
    run = await drive(app, rid)
    assert run.output == "charged (verified in the PSP)" and calls == {}


async def test_a_decision_on_an_expired_request_is_refused(app: App) -> None:
    reply_workflow(app, [], timeout="1s", on_timeout="reject")
    await app.start("reply", "ada@example.com")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    await app.db.write(lambda c: c.execute("UPDATE reviews SET expires_at = 1 WHERE id = ?", (req.id,)))
    with pytest.raises(InvalidRunState, match="expired"):
        await app.reviews.approve(req.id, by="late")
    assert (await app.reviews.get(req.id)).decided_by is None


async def test_cancelling_a_run_closes_its_review_and_a_late_decision_is_refused(app: App) -> None:
    sent: list[Any] = []
    reply_workflow(app, sent)
    rid = await app.start("reply", "ada@example.com")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    assert await app.cancel(rid) == "cancelled"
    closed = await app.reviews.get(req.id)
    assert (closed.status, closed.comment) == ("closed", "run cancelled")
    assert await app.reviews.list() == []
    with pytest.raises(InvalidRunState, match=f"run {rid} was cancelled"):
        await app.reviews.approve(req.id, by="late")
    assert (await app.get_run(rid)).status == "cancelled" and sent == []


async def test_a_decision_on_a_finished_run_is_refused_even_if_its_request_is_open(app: App) -> None:
    reply_workflow(app, [])
    rid = await app.start("reply", "ada@example.com")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    # A request left open by an older version, whose run ended without closing it.
    await app.db.write(lambda c: c.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (rid,)))
    with pytest.raises(InvalidRunState, match=f"run {rid} has failed"):
        await app.reviews.reject(req.id, by="late")
    assert (await app.reviews.get(req.id)).status == "pending"


async def test_edit_problems_name_each_field_and_the_schema_is_the_previews_model(app: App) -> None:
    reply_workflow(app, [])
    rid = await app.start("reply", "eve@example.com")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    schema = preview_schema(req)
    assert schema is not None and set(schema["required"]) == {"to", "body"}
    assert edit_problems(req, {"to": "eve@example.com", "body": "ok"}) == []
    problems = dict(edit_problems(req, {"to": 3}))
    assert set(problems) == {"to", "body"} and "string" in problems["to"] and "required" in problems["body"]
    untyped = dataclasses.replace(req, preview_type=None, preview="a draft")
    assert preview_schema(untyped) is None
    assert edit_problems(untyped, {"a": 1}) == [
        ("edit", "must be a string like the preview, got a JSON object")
    ]
    assert await app.get_run(rid)


async def test_recent_decisions_are_the_audit_trail_newest_first(app: App) -> None:
    reply_workflow(app, [])
    for to in ("a@example.com", "b@example.com", "c@example.com"):
        await app.start("reply", to)
    for n in range(3):
        await step_once(app, f"w{n}")
    first, second, third = await app.reviews.list()
    await app.reviews.approve(first.id, by="sam", edit={"to": "a@example.com", "body": "edited"})
    await app.reviews.reject(second.id, by="kim", comment="no")
    decided = await app.db.read(lambda conn: recent_decisions(conn, limit=10))
    assert [(r.id, r.status, r.decided_by) for r in decided] == [
        (second.id, "rejected", "kim"),
        (first.id, "approved", "sam"),
    ]
    assert decided[1].edit == {"to": "a@example.com", "body": "edited"}
    older = await app.db.read(lambda conn: recent_decisions(conn, limit=10, before=decided[0].decided_at))
    assert [r.id for r in older] == [first.id]
    assert third.status == "pending"
