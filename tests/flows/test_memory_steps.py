"""ctx.memory in workflows: recorded searches and writes, and the memory a reviewer sees."""

from __future__ import annotations

from typing import Any

import pytest

from crewline import App, Context

from ._drive import CrashPlan, drive, step_once


@pytest.fixture
async def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    await a.aclose()


async def test_memory_used_by_a_run_is_shown_in_its_review_request(app: App) -> None:
    await app.memory.remember("Ada prefers email over phone calls", scope="customer:ada")
    await app.memory.remember("Refunds over $100 need the owner's approval", scope="kb")

    @app.workflow()
    async def follow_up(ctx: Context, customer: str) -> dict[str, Any]:
        hits = await ctx.memory.search(
            "how does the customer like to be contacted", scope=[f"customer:{customer}"], k=3
        )
        await ctx.memory.remember("Asked about a refund on 2026-11-24", scope=f"customer:{customer}")
        decision = await ctx.approve("contact customer", preview={"channel": "email"})
        return {"hits": len(hits), "top": hits[0].text, "approved": decision.approved}

    app.engine.crash_hook = CrashPlan([("after_step_commit", 2)])
    rid = await app.start(follow_up, "ada")
    for i in range(5):
        await step_once(app, f"w{i}")
        if (await app.get_run(rid)).status == "waiting":
            break
        await app.db.write(lambda c: c.execute("UPDATE runs SET lease_until = 0 WHERE status = 'running'"))
    [req] = await app.reviews.list()
    [used] = [u for u in req.context["used"] if u["kind"] == "memory"]
    assert used["scopes"] == ["customer:ada"]
    assert "prefers email" in str(used["hits"][0])
    await app.reviews.approve(req.id, by="owner")
    run = await drive(app, rid)
    assert run.output == {"hits": 1, "top": "Ada prefers email over phone calls", "approved": True}
    logged = await app.db.read(lambda c: c.all("SELECT run_id, step, hits FROM memory_searches"))
    assert logged == [(rid, 1, 1)]  # the search ran once; its replay is read from the step, not run again
    facts = [i.text for i in await app.memory.items("customer:ada")]
    assert sorted(facts) == [
        "Ada prefers email over phone calls",
        "Asked about a refund on 2026-11-24",
    ]  # once
