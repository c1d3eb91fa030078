"""Workflows the server tests drive; ``app`` is what `crewline serve --app tests.server.sample_app:app` loads."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from crewline import App, Context, RetryPolicy


class Order(BaseModel):
    id: str
    amount: int = Field(ge=0)


def read_config(path: str) -> str:
    with open(path) as f:
        return f.read()


RELEASED: list[str] = []


def release_stock(hold: str) -> None:
    RELEASED.append(hold)


def pick(amount: int) -> str:
    if amount > 100:
        raise ValueError(f"cannot pick {amount} items")
    return f"picked {amount}"


def build(app: App) -> App:
    @app.workflow()
    async def echo(ctx: Context, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @app.workflow()
    async def order(ctx: Context, order: Order) -> dict[str, Any]:
        total = await ctx.step(lambda: order.amount * 2, name="double")
        return {"id": order.id, "total": total}

    @app.workflow()
    async def waiter(ctx: Context) -> Any:
        return await ctx.wait_for("go", timeout="1h")

    @app.workflow()
    async def nothing(ctx: Context) -> str:
        return "done"

    @app.workflow()
    async def refund(ctx: Context, order: Order) -> dict[str, Any]:
        decision = await ctx.approve("refund order", preview={"amount": order.amount}, risk="high")
        amount = (decision.edited or {"amount": order.amount})["amount"] if decision.approved else 0
        return {"approved": decision.approved, "amount": amount, "by": decision.decided_by}

    @app.workflow()
    async def charge(ctx: Context, order: Order) -> dict[str, Any]:
        receipt = await ctx.step(lambda: f"rcpt-{order.id}", name="charge card", effect="irreversible")
        return {"receipt": receipt}

    @app.workflow()
    async def broken(ctx: Context) -> str:
        try:
            return await ctx.step(read_config, "/no/such/dir/settings.toml", name="read settings")
        except Exception:
            return read_config("/no/such/dir/fallback.toml")  # fails in workflow code: a traceback

    @app.workflow(on_failure="review")
    async def fulfil(ctx: Context, order: Order) -> str:
        await ctx.step(lambda: f"hold-{order.id}", name="hold", effect="idempotent", compensate=release_stock)
        if order.amount == 0:
            await ctx.wait_for("go")
        picked: str = await ctx.step(pick, order.amount, retry=RetryPolicy(max_attempts=1))
        return picked

    @app.workflow()
    async def slow(ctx: Context) -> int:
        for i in range(3):
            await ctx.step(asyncio.sleep, 0.5, name=f"nap{i}")
        return 3

    return app


app = build(App())
