"""The spend report and the console's latency chart read closed hours from the call log's rollups: the
same figures as the raw rows give, on SQLite and PostgreSQL, also for hours rolled up before the rollups
carried token sums."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline.models import reports
from crewline.models.call_log import (
    CallRecord,
    CallWindow,
    call_window,
    hourly_latency,
    insert_record,
    refill_rollups,
    roll_up,
)
from crewline.models.types import Usage
from crewline.store import Database, open_database

HOUR = 3600.0
NOW = 1_767_225_600.0 + 1800  # 2026-01-01 00:30 UTC: half an hour into the current hour
GROUPS = ("day", "model", "workflow", "key")
SINCE = NOW - 50 * HOUR - 600  # a partial first hour (read raw), whole hours, the open hour (raw)


def at(i: int) -> float:
    return NOW - 60 * HOUR * (i + 0.5) / 1500  # 1,500 calls over the 60 hours before NOW


def record(i: int, at: float) -> CallRecord:
    answered = i % 7 != 0  # else failed before any provider answered: its model is "-"
    return CallRecord(
        f"tier-{i % 2}",
        started_at=at,
        provider="p" if answered else None,
        model=("a", "b", "c")[i % 3] if answered else None,
        workflow=f"w{i % 4}" if i % 5 else None,
        virtual_key=(f"key{i % 2}@2025-12-31" if i % 3 else f"key{i % 2}") if i % 6 else None,
        run_id=f"run-{i % 50}",
        status="ok" if answered else "error",
        error_class=None if answered else "Timeout",
        usage=Usage(100 + i, 10 + i % 9, i % 5, i % 3, i % 2),
        cost=0.125 * (i % 8),  # binary fractions: sums in any order are exact
        price_known=i % 23 != 0,
        latency_ms=10.0 + (i * 37) % 900,
        cache_hit=i % 11 == 0,
    )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)

    def write(conn: Any) -> None:
        for i in range(1500):
            insert_record(conn, record(i, at(i)), 4096, False)
        insert_record(conn, record(3, NOW - 60), 4096, False)  # in the open hour

    database.run(write)
    yield database
    database.close()


def spend(db: Database, since: float = SINCE) -> dict[str, Any]:
    return db.query(lambda conn: reports.spend(conn, GROUPS, since))


def rolled(db: Database, tokens: int) -> int:
    sql = "SELECT COUNT(*) FROM model_call_hours WHERE tokens = ?"
    return int(db.query(lambda conn: conn.scalar(sql, (tokens,))))


def test_spend_from_the_rollups_equals_spend_from_the_raw_rows(db: Database) -> None:
    raw = spend(db)  # nothing rolled up yet: every call read raw
    roll_up(db, now=NOW)
    assert rolled(db, 1) == 60 and rolled(db, 0) == 0
    assert spend(db) == raw
    assert {r["model"] for r in raw["model"]} == {"-", "p/a", "p/b", "p/c"}
    assert {r["key"] for r in raw["key"]} == {"-", "key0", "key1"}
    assert sum(r["calls"] for r in raw["day"]) == 1 + sum(1 for i in range(1500) if at(i) >= SINCE)
    assert sum(r["input_tokens"] for r in raw["model"]) > 0 < sum(r["output_tokens"] for r in raw["model"])
    # A run's spend is read from its raw rows, whatever is rolled up.
    one = db.query(lambda conn: reports.spend(conn, ("model",), SINCE, run_id="run-3"))
    assert sum(r["calls"] for r in one["model"]) == 1 + sum(
        1 for i in range(1500) if i % 50 == 3 and at(i) >= SINCE
    )


def _as_before_token_sums(conn: Any) -> None:
    """The rollups as the release before token sums left them."""
    conn.execute("DELETE FROM model_call_rollups WHERE dim = 'answered'")
    conn.execute("UPDATE model_call_rollups SET input_tokens = 0, output_tokens = 0")
    conn.execute("UPDATE model_call_hours SET tokens = 0, latency_p50 = NULL, latency_p95 = NULL")


def test_hours_rolled_up_before_token_sums_are_refilled_or_read_raw(db: Database) -> None:
    since, first_hours = NOW - 70 * HOUR, NOW - 1800 - 57 * HOUR
    raw = spend(db, since)
    roll_up(db, now=NOW)
    chart = db.query(lambda conn: hourly_latency(conn, first_hours))
    db.run(_as_before_token_sums)
    # Half the raw rows of the eight oldest hours pruned: those rollups cannot be refilled, so they stay
    # marked and the spend report reads what raw rows are left of them, as it did before.
    cutoff = NOW - 1800 - 52 * HOUR
    db.run(
        lambda conn: conn.execute(
            "DELETE FROM model_calls WHERE started_at < ? AND (id / 2) * 2 = id", (cutoff,)
        )
    )
    pruned_raw = spend(db, since)
    db.run(refill_rollups)
    assert rolled(db, 1) == 52 and rolled(db, 0) == 8
    assert spend(db, since) == pruned_raw != raw
    # Every hour's chart percentiles are back: refilled, or read from the hour's stored histogram.
    assert db.query(lambda conn: hourly_latency(conn, first_hours)) == chart


def test_the_chart_percentiles_per_hour_are_the_rollups_histograms(db: Database) -> None:
    roll_up(db, now=NOW)
    window = db.query(lambda conn: call_window(conn, CallWindow(SINCE, "hour", exact=False)))
    chart = db.query(lambda conn: hourly_latency(conn, SINCE))
    assert len(chart) == 51  # the partial first hour, 49 whole ones, the open one
    assert chart == {int(h): g.latency[:2] for h, g in window.items()}
    assert all(p50 is not None and p95 is not None and p50 <= p95 for p50, p95 in chart.values())
