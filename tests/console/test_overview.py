"""The overview: today's runs, cost against budgets, error rates, reviews waiting, and the chart data."""

from __future__ import annotations

import time
from collections.abc import Callable

from crewline.models.call_log import CallRecord, insert_record
from crewline.models.types import Usage

from ..server.conftest import Api
from .conftest import Browser


def _calls(api: Api) -> None:
    now = time.time()
    records = [
        CallRecord("cheap", started_at=now - 10, provider="fake", model="m1", cost=0.10, latency_ms=100.0),
        CallRecord("cheap", started_at=now - 5, provider="fake", model="m1", cost=0.20, latency_ms=300.0),
        CallRecord(
            "big", started_at=now - 3, provider="fake", model="m2", status="error", error_class="RateLimited"
        ),
    ]
    for r in records:
        r.usage = Usage(input_tokens=10, output_tokens=5)
        api.app.db.run(lambda conn, r=r: insert_record(conn, r, 10_000, False))


def test_the_overview_shows_runs_cost_against_budget_and_errors(
    api_factory: Callable[..., Api],
) -> None:
    api = api_factory({"models": {"budgets": {"day": 5.0}}})
    run = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 2}})
    api.wait_status(run.json()["run_id"], "completed")
    api.http.post("/api/v1/runs", json={"workflow": "broken"})
    _calls(api)
    b = Browser(api.url)
    b.sign_in(api.admin)
    page = b.get("/")
    assert page.status_code == 200
    text = page.text
    assert '<dt>completed</dt><dd><a href="/runs?state=completed&amp;since=today">1</a>' in text
    assert "$0.30" in text and "of $5.00" in text  # today's cost against the day's budget
    assert "<dt>model calls today</dt><dd>3</dd>" in text
    assert "<dt>call error rate</dt><dd>33.3%</dd>" in text
    assert "<dt>reviews waiting</dt><dd>0</dd>" in text


def test_the_chart_data_has_cost_calls_and_latency_per_hour(api: Api, browser: Callable[[], Browser]) -> None:
    _calls(api)
    b = browser()
    b.sign_in(api.key("operator"))
    data = b.get("/overview/charts").json()
    assert len(data["hours"]) in (168, 169) and data["hours"] == sorted(data["hours"])
    assert round(sum(data["cost"]["fake/m1"]), 6) == 0.30
    assert sum(data["calls"]["fake/m1"]) == 2 and sum(data["calls"]["fake/m2"]) == 1
    latest = [v for v in data["latency"]["p50"] if v is not None]
    assert latest and 90 <= latest[-1] <= 310


def test_a_reviewer_gets_no_overview_and_no_chart_data(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    b.sign_in(api.key("reviewer"))
    assert "<h1>Overview</h1>" not in b.get("/").text
    r = b.get("/overview/charts")
    assert r.status_code == 403 and "may not read spend" in r.text
