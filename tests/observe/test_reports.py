"""The stats report over a known set of calls, runs, reviews and searches, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from crewline.errors import InvalidInput
from crewline.observe.reports import parse_query, prepare, stats
from crewline.store import Database, open_database

from ._seed import A_LATENCY, B_LATENCY, percentile_cont, seed

NOW = time.time()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    seed(database, NOW)
    yield database
    database.close()


def report(db: Database, since: str = "24h", by: str | None = None) -> dict:
    query = parse_query(since, by, now=NOW)
    prepare(db, query)  # the hours of the window that have closed read from their rollups
    return db.query(lambda conn: stats(conn, query))


def test_call_totals_rates_and_percentiles(db: Database) -> None:
    calls = report(db)["calls"]
    assert calls["calls"] == 110 and calls["cost"] == pytest.approx(2.0)
    assert calls["runs"] == 4 and calls["cost_per_run"] == pytest.approx(0.1)
    assert calls["errors"] == 7 and calls["error_rate"] == round(7 / 110, 4)
    assert calls["errors_by_class"] == {
        "RateLimited": {"calls": 5, "rate": round(5 / 110, 4)},
        "Timeout": {"calls": 2, "rate": round(2 / 110, 4)},
    }
    assert calls["retry_rate"] == round(10 / 110, 4) and calls["cache_hit_rate"] == round(10 / 110, 4)
    both = A_LATENCY + B_LATENCY
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert calls["latency_ms"][name] == pytest.approx(percentile_cont(both, fraction), abs=1e-3)
    ttft = [float(i) for i in range(2, 101, 2)]
    assert calls["ttft_ms"] == {"p50": 51.0, "p95": pytest.approx(percentile_cont(ttft, 0.95))}
    assert calls["ttft_ms"]["p95"] == pytest.approx(95.1)


def test_grouped_by_model_key_and_hour(db: Database) -> None:
    by_model = {g["model"]: g for g in report(db, by="model")["groups"]}
    assert by_model["p/a"]["latency_ms"] == {"p50": 50.5, "p95": 95.05, "p99": 99.01}
    assert by_model["p/b"]["latency_ms"] == {"p50": 55.0, "p95": 95.5, "p99": 99.1}
    assert (
        by_model["p/b"]["ttft_ms"] == {"p50": None, "p95": None} and by_model["p/b"]["errors_by_class"] == {}
    )
    assert by_model["p/b"]["cost"] == pytest.approx(1.0) and by_model["p/b"]["cost_per_run"] is None
    by_key = {g["key"]: g["calls"] for g in report(db, by="key")["groups"]}
    assert by_key == {"-": 100, "k1": 10}  # a key's daily-budget scope counts as the key
    hours = report(db, by="hour")["groups"]
    assert [g["calls"] for g in hours] == [10, 100]
    assert hours[1]["hour"] == time.strftime("%Y-%m-%d %H:00", time.gmtime(NOW - 3600))
    assert [g["calls"] for g in report(db, "4d", by="day")["groups"]][-1] >= 1
    assert sum(g["calls"] for g in report(db, "4d", by="day")["groups"]) == 111


def test_runs_reviews_and_retrieval(db: Database) -> None:
    data = report(db)
    assert data["runs"]["by_state"] == {"completed": 2, "failed": 1, "pending": 1}
    assert data["runs"]["completed"] == 2 and data["runs"]["completed_per_hour"] == round(2 / 24, 3)
    assert data["runs"]["queue_depth"] == {"mail": 1}
    reviews = data["reviews"]
    assert reviews["pending"] == 1 and reviews["longest_wait_s"] == pytest.approx(100)
    assert reviews["decided"] == 2
    assert reviews["decision_p50_s"] == pytest.approx(20) and reviews["decision_p95_s"] == pytest.approx(29)
    retrieval = data["retrieval"]
    assert retrieval["searches"] == 4 and retrieval["hit_rate"] == 0.75
    assert retrieval["mean_top_score"] == pytest.approx(0.4)
    assert len(retrieval["series"]) == 1 and retrieval["series"][0]["searches"] == 4
    assert len(report(db, "4d")["retrieval"]["series"]) == 2


def test_an_empty_database_reports_zeros(db_url: str) -> None:
    database = open_database(db_url)
    try:
        data = database.query(lambda conn: stats(conn, parse_query("1h", "model")))
    finally:
        database.close()
    assert data["calls"]["calls"] == 0 and data["calls"]["error_rate"] is None and data["groups"] == []
    assert data["calls"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert data["retrieval"] == {"searches": 0, "hit_rate": None, "mean_top_score": None, "series": []}


@pytest.mark.parametrize(
    ("since", "by", "message"),
    [
        ("nonsense", None, "since 'nonsense' is not a time span: give a number with m, h, d or w"),
        ("-5h", None, "since '-5h'"),
        ("0h", None, "since '0h'"),
        ("999d", None, "at most 366d"),
        ("24h", "colour", "by 'colour' is not a grouping: use one of model, workflow, key, day, hour"),
    ],
)
def test_bad_input_names_the_value_and_what_is_accepted(since: str, by: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_query(since, by)
