"""Hourly rollups of the call log against the raw rows they summarise, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from crewline.models.call_log import (
    SETTLE_S,
    CallRecord,
    CallWindow,
    call_window,
    insert_record,
    keep_rolled_up,
    roll_up,
)
from crewline.observe.reports import BY, parse_query, prepare, stats
from crewline.store import Database, open_database
from tests.observe._seed import percentile_cont

HOUR = 3600.0
NOW = 1_767_225_600.0 + 1800  # 2026-01-01 00:30 UTC: half an hour into the current hour
MODELS = ("a", "b", "c")
SUMS = ("calls", "cost", "errors", "errors_by_class", "unpriced_calls", "error_rate", "retry_rate")


def record(rng: random.Random, at: float, i: int) -> CallRecord:
    failed = i % 17 == 0
    return CallRecord(
        "tier",
        started_at=at,
        provider="p",
        model=MODELS[i % 3],
        workflow=f"w{i % 4}" if i % 5 else None,
        virtual_key=None if i % 5 else f"key{i % 2}@2026-01-01",
        run_id=f"run-{i % 400}" if i % 5 else None,
        status="error" if failed else "ok",
        error_class=("RateLimited", "Timeout")[i % 2] if failed else None,
        cost=0.25 * (i % 4),  # binary fractions: sums in any order are exact
        price_known=i % 23 != 0,
        latency_ms=rng.lognormvariate(6.0, 0.6),
        ttft_ms=rng.uniform(20, 400) if i % 2 else None,
        cache_hit=i % 11 == 0,
        attempts=2 if i % 13 == 0 else 1,
    )


def seed(db: Database, calls: int = 3000, hours: float = 72) -> None:
    """``calls`` records spread evenly over the ``hours`` before NOW."""
    rng = random.Random(5)

    def write(conn: Any) -> None:
        for i in range(calls):
            insert_record(conn, record(rng, NOW - hours * HOUR * (i + 0.5) / calls, i), 4096, False)

    db.run(write)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


def report(db: Database, since: str, by: str | None = None, *, rollups: bool = True) -> dict[str, Any]:
    query = parse_query(since, by, now=NOW)
    if not rollups:
        query = type(query)(query.since_s, by, NOW, rollups=False)
    prepare(db, query)
    return db.query(lambda conn: stats(conn, query))


def groups(data: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    by = data["by"]
    return {g[by]: g for g in data["groups"]} if by else {"all": data["calls"]}


def rolled_hours(db: Database) -> int:
    return int(db.query(lambda conn: conn.scalar("SELECT COUNT(*) FROM model_call_hours WHERE calls > 0")))


def test_rollups_add_up_to_the_raw_figures_exactly(db: Database) -> None:
    seed(db)
    for since in ("24h", "3d"):
        for by in (None, *BY):
            raw, rolled = report(db, since, by, rollups=False), report(db, since, by)
            assert groups(rolled).keys() == groups(raw).keys()
            for key, group in groups(rolled).items():
                assert {k: group[k] for k in SUMS} == {k: groups(raw)[key][k] for k in SUMS}, (since, by, key)
                assert group["cache_hit_rate"] == groups(raw)[key]["cache_hit_rate"]
    assert rolled_hours(db) == 71  # every whole hour of the window that has closed
    short, long = report(db, "24h", "model"), report(db, "3d", "model")
    assert (short["percentiles"], short["distinct_runs"]) == ("exact", "exact")
    assert (long["percentiles"], long["distinct_runs"]) == ("histogram", "estimate")
    # A short window's percentiles and runs stay exact, read from the raw rows as before rollups.
    assert short["groups"] == report(db, "24h", "model", rollups=False)["groups"]


def test_histogram_percentiles_are_within_one_percent(db: Database) -> None:
    seed(db, calls=6000, hours=48)
    values = db.query(lambda conn: conn.all("SELECT model, latency_ms, ttft_ms, run_id FROM model_calls"))
    data = report(db, "3d", "model")
    assert data["percentiles"] == "histogram"
    for model, group in [("all", data["calls"])] + [(g["model"][2:], g) for g in data["groups"]]:
        mine = [v for v in values if model in ("all", v[0])]
        latency = [float(v[1]) for v in mine]
        ttft = [float(v[2]) for v in mine if v[2] is not None]
        for name, f in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert group["latency_ms"][name] == pytest.approx(percentile_cont(latency, f), rel=0.01)
        for name, f in (("p50", 0.5), ("p95", 0.95)):
            assert group["ttft_ms"][name] == pytest.approx(percentile_cont(ttft, f), rel=0.01)
        runs = len({v[3] for v in mine if v[3] is not None})
        assert group["runs"] == pytest.approx(runs, rel=0.05)  # a HyperLogLog estimate


def test_a_record_written_late_into_a_rolled_up_hour_is_counted(db: Database) -> None:
    seed(db, calls=200, hours=48)
    assert roll_up(db, now=NOW).written == 48
    before = report(db, "3d", "hour")
    hour = NOW - 30 * HOUR
    late = CallRecord("tier", started_at=hour, provider="p", model="a", cost=2.0, latency_ms=5.0)
    late.status, late.error_class = "error", "Timeout"
    db.run(lambda conn: insert_record(conn, late, 4096, False))
    assert roll_up(db, now=NOW + 1).written == 1  # only the hour it fell into, once
    assert roll_up(db, now=NOW + 2).written == 0
    after = report(db, "3d", "hour")
    assert after["calls"]["calls"] == before["calls"]["calls"] + 1
    assert after["calls"]["cost"] == pytest.approx(before["calls"]["cost"] + 2.0)
    changed = [
        (a["hour"], a["calls"] - b["calls"])
        for a, b in zip(after["groups"], before["groups"], strict=True)
        if a != b
    ]
    assert changed == [(_label(hour), 1)]
    assert after["calls"]["errors_by_class"]["Timeout"]["calls"] == (
        before["calls"]["errors_by_class"]["Timeout"]["calls"] + 1
    )


def test_an_hour_is_rolled_up_only_once_it_settled(db: Database) -> None:
    seed(db, calls=10, hours=1)  # all in the hour that closed at NOW - 1800
    assert roll_up(db, now=NOW - 1800 + SETTLE_S - 1).written == 0
    assert roll_up(db, now=NOW - 1800 + SETTLE_S + 1).written == 1
    assert report(db, "1h")["calls"]["calls"] == 10


def test_two_processes_rolling_up_the_same_hours_write_each_once(db_url: str, db: Database) -> None:
    seed(db, calls=600, hours=24)
    expected = report(db, "2d", "key", rollups=False)
    others = [open_database(db_url) for _ in range(2)]
    start = threading.Barrier(2)
    done: list[int] = []

    def work(other: Database) -> None:
        start.wait()
        done.append(roll_up(other, now=NOW).written)

    threads = [threading.Thread(target=work, args=(o,)) for o in others]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for o in others:
            o.close()
    assert sum(done) == 24 and rolled_hours(db) == 24
    rows = db.query(lambda conn: conn.scalar("SELECT COUNT(*) FROM model_call_rollups WHERE dim = ''"))
    assert int(rows) == 24
    rolled = report(db, "2d", "key")
    for key, group in groups(rolled).items():
        assert {k: group[k] for k in SUMS} == {k: groups(expected)[key][k] for k in SUMS}


def test_a_window_reads_its_partial_hours_raw_and_its_whole_hours_rolled_up(db: Database) -> None:
    def at(offset: float, cost: float) -> None:
        r = CallRecord("tier", started_at=NOW + offset, provider="p", model="a", cost=cost, latency_ms=1.0)
        db.run(lambda conn: insert_record(conn, r, 4096, False))

    at(-30 * HOUR - 600, 100.0)  # before the window (it starts 30 h ago, 10 minutes into an hour)
    at(-30 * HOUR + 600, 1.0)  # the window's partial first hour
    at(-29 * HOUR, 2.0)  # whole hours
    at(-10 * HOUR, 4.0)
    at(-600, 8.0)  # the current hour, not closed: raw
    roll_up(db, now=NOW)
    assert rolled_hours(db) == 3  # the first two records share an hour; the current one is open
    data = report(db, "30h")
    assert data["percentiles"] == "histogram"
    assert data["calls"]["calls"] == 4 and data["calls"]["cost"] == 15.0
    assert report(db, "2d")["calls"]["cost"] == 115.0


def test_rollups_outlive_the_raw_rows(db: Database) -> None:
    seed(db, calls=300, hours=48)
    before = report(db, "3d", "model")
    db.run(lambda conn: conn.execute("DELETE FROM model_calls WHERE started_at < ?", (NOW - 2 * HOUR,)))
    roll_up(db, now=NOW + HOUR)  # finds fewer raw rows than the rollups hold: keeps the rollups
    assert report(db, "3d", "model") == before


def test_workers_keep_the_rollups_current(db: Database) -> None:
    now = time.time()
    for i in range(30):
        r = CallRecord("tier", started_at=now - (i + 1) * HOUR, provider="p", model="a", latency_ms=1.0)
        db.run(lambda conn, r=r: insert_record(conn, r, 4096, False))

    async def chore() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(keep_rolled_up(db, stopping, every=0.05))
        for _ in range(200):
            if rolled_hours(db) >= 29:
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await task

    asyncio.run(chore())
    assert rolled_hours(db) >= 29


def _label(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(at))


@pytest.mark.parametrize("by", ["", "model"])
def test_sums_only_give_the_same_sums_as_the_full_window(db: Database, by: str) -> None:
    seed(db)
    roll_up(db, now=NOW)
    since = NOW - 30 * HOUR - 600  # a partial first hour read raw, whole hours from the rollups
    full = db.query(lambda conn: call_window(conn, CallWindow(since, by)))
    sums = db.query(lambda conn: call_window(conn, CallWindow(since, by, sums_only=True)))
    assert sums.keys() == full.keys() and len(sums) >= 1
    for key, group in sums.items():
        assert group.figures.calls == full[key].figures.calls > 0
        assert group.figures.cost == full[key].figures.cost
        assert group.figures.errors_by_class == full[key].figures.errors_by_class
        assert group.latency == (None, None, None) and group.runs == 0  # not computed: not asked for
