"""Reports benchmark: how long ``crewline stats`` takes over a million model-call records.

Builds a temporary database (SQLite by default, or an empty PostgreSQL database with ``--pg URL``) holding
``--calls`` call records spread over 30 days (20 models, 10 workflows, 50 keys; log-normal latencies; 5%
errors in four classes, 3% retried, 10% cache hits, 40% streamed with a time to first token, 60% made by
runs), plus runs, reviews and memory searches in proportion, then times the whole report (what
``crewline stats --since S [--by B]`` and ``GET /api/v1/stats`` compute) for each window and grouping:
first from the raw rows only (as before hourly rollups), then once the rollups are built (the time to
build them, once, is printed too; a report's own check for missing hours is included in its time).
It prints one table of timings, before and after side by side, with the machine and the command.

For comparison: Langfuse answers the same questions from ClickHouse, beside PostgreSQL, Redis and S3;
crewline reads them from its own database, in the same process, with no second store to run.

    python bench/observe.py                      # 1,000,000 calls on SQLite
    python bench/observe.py --calls 100000 --pg postgresql://localhost/bench_empty
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from crewline.models.call_log import roll_up
from crewline.observe.reports import BY, StatsQuery, parse_query, prepare, stats
from crewline.store import Database, open_database

DAY = 86400.0
MODELS = [f"provider{m % 4}/model-{m}" for m in range(20)]
WORKFLOWS = [f"workflow-{w}" for w in range(10)]
KEYS = [f"key{k:02d}" for k in range(50)]
ERRORS = ["RateLimited", "Timeout", "ProviderUnavailable", "InvalidOutput"]
_CALL_SQL = (
    "INSERT INTO model_calls (started_at, day, run_id, step, workflow, virtual_key, requested, kind, provider, "
    "model, status, error_class, input_tokens, output_tokens, cost, latency_ms, ttft_ms, cache_hit, attempts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def call_row(rng: random.Random, now: float) -> tuple[object, ...]:
    at = now - rng.random() * 30 * DAY
    model = rng.choice(MODELS)
    provider, _, name = model.partition("/")
    failed = rng.random() < 0.05
    streamed = rng.random() < 0.4
    latency = rng.lognormvariate(6.0, 0.6)  # median ~400 ms
    run = f"run-{rng.randrange(200_000)}" if rng.random() < 0.6 else None
    return (
        at,
        datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d"),
        run,
        rng.randrange(1, 12) if run else None,
        rng.choice(WORKFLOWS) if run else None,
        None if run else rng.choice(KEYS),
        model,
        "stream" if streamed else "complete",
        provider,
        name,
        "error" if failed else "ok",
        rng.choice(ERRORS) if failed else None,
        rng.randrange(50, 4000),
        rng.randrange(10, 800),
        rng.random() * 0.01,
        latency,
        latency * rng.uniform(0.1, 0.4) if streamed else None,
        int(rng.random() < 0.1),
        2 if rng.random() < 0.03 else 1,
    )


def fill(db: Database, calls: int, seed: int = 7) -> float:
    """Bulk-insert the data set (straight SQL: a benchmark's fixture, not how crewline writes)."""
    rng = random.Random(seed)
    now = time.time()
    batch = 50_000
    for start in range(0, calls, batch):
        rows = [call_row(rng, now) for _ in range(min(batch, calls - start))]
        db.run(lambda conn, rows=rows: conn.raw.cursor().executemany(conn.dialect.sql(_CALL_SQL), rows))
    runs = calls // 20
    db.run(
        lambda conn: conn.raw.cursor().executemany(conn.dialect.sql(_RUN_SQL), list(_runs(rng, now, runs)))
    )
    db.run(
        lambda conn: conn.raw.cursor().executemany(
            conn.dialect.sql(_REVIEW_SQL), list(_reviews(rng, now, runs // 10))
        )
    )
    db.run(
        lambda conn: conn.raw.cursor().executemany(
            conn.dialect.sql(_SEARCH_SQL), list(_searches(rng, now, calls // 10))
        )
    )
    return now


_RUN_SQL = "INSERT INTO runs (id, workflow, queue, status, created_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
_REVIEW_SQL = (
    "INSERT INTO reviews (id, run_id, step_no, kind, action, risk, status, on_timeout, decided_at, created_at) "
    "VALUES (?, ?, 1, 'approval', 'send', 'medium', ?, 'reject', ?, ?)"
)
_SEARCH_SQL = (
    "INSERT INTO memory_searches (at, scopes, k, hits, top_score, run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _runs(rng: random.Random, now: float, n: int) -> Iterator[tuple[object, ...]]:
    for i in range(n):
        at = now - rng.random() * 30 * DAY
        status = rng.choices(["completed", "failed", "pending", "waiting"], [90, 4, 3, 3])[0]
        done = at + rng.random() * 60 if status in ("completed", "failed") else None
        yield (f"run-{i}", rng.choice(WORKFLOWS), rng.choice(["default", "mail"]), status, at, at, done)


def _reviews(rng: random.Random, now: float, n: int) -> Iterator[tuple[object, ...]]:
    for i in range(n):
        at = now - rng.random() * 30 * DAY
        decided = rng.random() < 0.95
        yield (
            f"rev-{i}",
            f"run-{i}",
            "approved" if decided else "pending",
            at + rng.expovariate(1 / 600) if decided else None,
            at,
        )


def _searches(rng: random.Random, now: float, n: int) -> Iterator[tuple[object, ...]]:
    for _ in range(n):
        hits = rng.choice([0, 1, 3, 5, 5])
        yield (now - rng.random() * 30 * DAY, "kb", 5, hits, rng.random() if hits else None, None, None)


def timed(db: Database, since: str, by: str | None, now: float, repeat: int, rollups: bool) -> float:
    parsed = parse_query(since, by, now=now)
    query = StatsQuery(parsed.since_s, by, now, rollups=rollups)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        prepare(db, query)
        db.query(lambda conn: stats(conn, query))
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="model-call records to generate")
    parser.add_argument("--pg", metavar="URL", help="an empty PostgreSQL database to fill instead of SQLite")
    parser.add_argument("--repeat", type=int, default=3, help="runs per report; the best is shown")
    parser.add_argument("--raw-repeat", type=int, default=1, help="runs per report from raw rows only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.pg or f"sqlite:///{Path(tmp) / 'observe.db'}"
        db = open_database(url)
        try:
            start = time.perf_counter()
            now = fill(db, args.calls)
            print(f"filled {args.calls:,} calls in {time.perf_counter() - start:.1f} s ({db.name})")
            db.run(lambda conn: conn.execute("ANALYZE"))
            windows = [(since, by) for since in ("24h", "7d", "30d") for by in (None, *BY)]
            raw = [timed(db, since, by, now, args.raw_repeat, False) for since, by in windows]
            start = time.perf_counter()
            rolled = roll_up(db, now=now)
            build = time.perf_counter() - start
            after = [timed(db, since, by, now, args.repeat, True) for since, by in windows]
        finally:
            db.close()
    print(f"\ncrewline stats over {args.calls:,} model calls on {db.name}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"rollups built once: {rolled.written} hours in {build:.1f} s\n")
    print(f"{'--since':>8}  {'--by':<9} {'raw s':>8} {'rollups s':>10}")
    for (since, by), before, now_s in zip(windows, raw, after, strict=True):
        print(f"{since:>8}  {by or '-':<9} {before:8.3f} {now_s:10.3f}")


if __name__ == "__main__":
    main()
