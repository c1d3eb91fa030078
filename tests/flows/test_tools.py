"""Tools: schemas from signatures, validated and recorded arguments, approvals by risk, rejections."""

from __future__ import annotations

from typing import Any

import pytest

from crewline import ActionRejected, App, Context, tool

from ._drive import drive, step_once

SENT: list[dict[str, Any]] = []


@tool
def lookup_order(order_id: str, include_items: bool = False) -> dict[str, Any]:
    """Find an order by id."""
    return {"id": order_id, "total": 42, "items": ["mug"] if include_items else []}


@tool(effect="irreversible")
def send_email(to: str, body: str) -> str:
    """Send an email."""
    SENT.append({"to": to, "body": body})
    return f"sent to {to}"


@pytest.fixture
def app(db_url: str) -> Any:
    SENT.clear()
    a = App(db_url)

    @a.workflow()
    async def support(ctx: Context, order_id: str) -> Any:
        order = await ctx.tool(lookup_order, order_id=order_id, include_items=True)
        try:
            return await ctx.tool(send_email, to="ada@example.com", body=f"Your order {order['id']} shipped")
        except ActionRejected as e:
            return f"not sent: {e.comment}"

    yield a
    a.close()


def test_schema_comes_from_the_signature() -> None:
    schema = lookup_order.json_schema()
    assert schema["required"] == ["order_id"]
    assert schema["properties"]["include_items"]["type"] == "boolean"
    assert lookup_order.description == "Find an order by id."
    assert (lookup_order.effect, lookup_order.default_risk, send_email.default_risk) == (
        "read",
        "low",
        "medium",
    )


async def test_an_irreversible_tool_waits_for_approval_and_takes_edited_arguments(app: App) -> None:
    rid = await app.start("support", "o-1")
    assert await step_once(app, "w1") == ["parked"]
    [req] = await app.reviews.list()
    assert req.action == "tool send_email"
    assert req.preview == {
        "tool": "send_email",
        "arguments": {"to": "ada@example.com", "body": "Your order o-1 shipped"},
    }
    await app.reviews.approve(
        req.id,
        by="sam",
        edit={"tool": "send_email", "arguments": {"to": "ada@example.com", "body": "Shipped!"}},
    )
    run = await drive(app, rid)
    assert run.output == "sent to ada@example.com" and SENT == [{"to": "ada@example.com", "body": "Shipped!"}]
    steps = await app.steps(rid)
    assert [(s.kind, s.name) for s in steps] == [
        ("tool", "lookup_order"),
        ("approval", "tool send_email"),
        ("tool", "send_email"),
    ]
    assert steps[0].input == {"order_id": "o-1", "include_items": True}
    assert (
        steps[2].input == {"to": "ada@example.com", "body": "Shipped!"} and steps[2].effect == "irreversible"
    )


async def test_a_rejected_tool_call_never_runs(app: App) -> None:
    rid = await app.start("support", "o-2")
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    await app.reviews.reject(req.id, by="sam", comment="customer asked for no email")
    run = await drive(app, rid)
    assert run.output == "not sent: customer asked for no email" and SENT == []


async def test_arguments_failing_the_schema_fail_clearly_before_anything_runs(app: App) -> None:
    @app.workflow()
    async def broken(ctx: Context) -> None:
        await ctx.tool(send_email, to="ada@example.com")

    rid = await app.start(broken)
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "InvalidInput"
    assert run.error["message"] == "arguments for tool send_email are not valid: body: Field required"
    assert await app.steps(rid) == [] and SENT == []
