"""The costs page: spend by model, workflow, key and day over a range, and the budgets with their use."""

from __future__ import annotations

import time
from collections.abc import Callable

from crewline.models.call_log import CallRecord, insert_record
from crewline.models.config import ModelsConfig
from crewline.models.ledger import Ledger, to_nusd

from ..server.conftest import Api
from .conftest import Browser


def test_costs_by_model_workflow_key_and_day_with_budgets(api_factory: Callable[..., Api]) -> None:
    api = api_factory({"models": {"budgets": {"day": 2.0}}})
    key_id = api.key("operator", name="billing bot").split("_")[1]
    now = time.time()
    records = [
        CallRecord(
            "cheap",
            started_at=now - 60,
            provider="fake",
            model="m1",
            workflow="triage",
            virtual_key=key_id,
            cost=0.25,
        ),
        CallRecord("cheap", started_at=now - 30, provider="fake", model="m2", workflow="reply", cost=0.5),
        CallRecord(
            "cheap", started_at=now - 20 * 86400, provider="fake", model="m3", workflow="old", cost=9.0
        ),
    ]
    for r in records:
        api.app.db.run(lambda conn, r=r: insert_record(conn, r, 10_000, False))
    b = Browser(api.url)
    b.sign_in(api.admin)
    week = b.get("/costs").text
    assert "$0.75" in week and "fake/m1" in week and "fake/m2" in week and "fake/m3" not in week
    assert '<a href="/runs?workflow=triage">triage</a>' in week
    assert f'<span class="mono">{key_id}</span> billing bot' in week
    month = b.get("/costs", params={"days": "30"}).text
    assert "fake/m3" in month and "$9.75" in month
    bad = b.get("/costs", params={"days": "forever"})
    assert bad.status_code == 400 and "not a number of days from 1 to 366" in bad.text and "$0.75" in bad.text


def test_each_budget_shows_its_use(api_factory: Callable[..., Api]) -> None:
    api = api_factory({"models": {"budgets": {"day": 2.0}}})
    b = Browser(api.url)
    b.sign_in(api.admin)
    assert "No budget has been used yet" in b.get("/costs").text
    ledger = Ledger(api.app.db, ModelsConfig.parse({"budgets": {"day": 2.0}}).budgets)
    limits = ledger.scopes(None)
    day = next(scope for scope in limits if scope.startswith("day:"))
    api.app.db.run(lambda conn: ledger.settle_in(conn, None, list(limits), to_nusd(0.5), limits))
    page = b.get("/costs").text
    assert f'<td class="mono">{day}</td><td class="num">$0.50</td>' in page
    assert "$2.00" in page and "25.0%" in page


def test_a_reviewer_cannot_open_costs(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    b.sign_in(api.key("reviewer"))
    r = b.get("/costs")
    assert r.status_code == 403 and "may not read spend" in r.text
