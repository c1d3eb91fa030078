"""``/api/v1/spend``, ``/calls`` and ``/budgets`` over real model calls."""

from __future__ import annotations

import asyncio

from crewline.models import Gateway, ModelsConfig
from crewline.store import Database
from crewline.testing import ScriptedModel

from .conftest import Api


async def make_calls(db: Database) -> None:
    config = ModelsConfig.parse({"prices": {"test/scripted": {"input": 1000, "output": 1000}}})
    gateway = Gateway.for_testing(
        ScriptedModel("one", "two", "three"), db, config=config, wait_for_records=True
    )
    try:
        for workflow in ("triage", "triage", "digest"):
            await gateway.complete(
                "test/scripted", "hello", max_tokens=5, budget_scope={"workflow": workflow}, run_id="r1"
            )
        gateway.ledger.set_limit("workflow:triage", 1.0)  # type: ignore[union-attr]
    finally:
        await gateway.aclose()


def test_spend_calls_and_budgets(api: Api) -> None:
    db = Database(api.app.settings.database_url)
    try:
        asyncio.run(make_calls(db))
    finally:
        db.close()
    spend = api.http.get("/api/v1/spend", params={"by": ["workflow", "model"]}).json()
    by_workflow = {r["workflow"]: r for r in spend["workflow"]}
    assert by_workflow["triage"]["calls"] == 2 and by_workflow["digest"]["calls"] == 1
    assert by_workflow["triage"]["unpriced_calls"] == 0 and spend["day"] is None
    assert [r["model"] for r in spend["model"]] == ["test/scripted"]
    calls = api.http.get("/api/v1/calls", params={"workflow": "triage", "limit": 1}).json()
    assert len(calls) == 1 and calls[0]["run_id"] == "r1" and calls[0]["status"] == "ok"
    older = api.http.get("/api/v1/calls", params={"workflow": "triage", "before_id": calls[0]["id"]}).json()
    assert len(older) == 1 and older[0]["id"] < calls[0]["id"]
    budgets = {b["scope"]: b for b in api.http.get("/api/v1/budgets").json()}
    assert budgets["workflow:triage"]["limit"] == 1.0 and budgets["workflow:triage"]["reserved"] == 0
    bad = api.http.get("/api/v1/spend", params={"days": 0})
    assert bad.status_code == 422
    huge = api.http.get("/api/v1/calls", params={"before_id": 2**70})  # wider than any database integer
    assert huge.status_code == 422 and "before_id" in huge.text
    assert api.as_key(api.key("proxy")).get("/api/v1/spend").status_code == 403
