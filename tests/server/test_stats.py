"""``/api/v1/stats`` over a known set of calls, runs, reviews and searches."""

from __future__ import annotations

import time

from crewline.store import Database
from tests.observe._seed import seed

from .conftest import Api


def db_hours(api: Api) -> int:
    db = Database(api.app.settings.database_url)
    try:
        return int(db.query(lambda conn: conn.scalar("SELECT COUNT(*) FROM model_call_hours")))
    finally:
        db.close()


def test_stats_report_bad_input_and_scope(api: Api) -> None:
    db = Database(api.app.settings.database_url)
    try:
        seed(db, time.time())
    finally:
        db.close()
    data = api.http.get("/api/v1/stats", params={"by": "model"}).json()
    assert data["calls"]["calls"] == 110 and data["by"] == "model"
    by_model = {g["model"]: g for g in data["groups"]}
    assert by_model["p/a"]["latency_ms"] == {"p50": 50.5, "p95": 95.05, "p99": 99.01}
    assert data["runs"]["queue_depth"] == {"mail": 1} and data["retrieval"]["hit_rate"] == 0.75
    long = api.http.get("/api/v1/stats", params={"since": "4d"}).json()
    assert long["calls"]["calls"] == 111 and long["percentiles"] == "histogram"
    assert data["percentiles"] == "exact" and data["distinct_runs"] == "exact"
    hours = db_hours(api)
    assert hours > 0  # the report rolled up the closed hours of its window
    bad = api.http.get("/api/v1/stats", params={"since": "nonsense"})
    assert bad.status_code == 422
    assert "since 'nonsense' is not a time span" in bad.json()["error"]["message"]
    unknown = api.http.get("/api/v1/stats", params={"by": "colour"})
    assert unknown.status_code == 422 and "use one of model, workflow, key, day, hour" in unknown.text
    assert api.as_key(api.key("proxy")).get("/api/v1/stats").status_code == 403
