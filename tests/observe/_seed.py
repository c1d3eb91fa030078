"""A known set of model calls, runs, reviews and memory searches, written through their owners'
functions, and the numbers a report over them must show."""

from __future__ import annotations

import math

from crewline.flows.review_requests import NewRequest, create_request, set_status
from crewline.flows.run_store import finish_run, insert_run
from crewline.memory.retrieval import SearchLog, log_search
from crewline.models.call_log import CallRecord, insert_record
from crewline.models.types import Usage
from crewline.store import Conn, Database

HOUR = 3600.0


def percentile_cont(values: list[float], fraction: float) -> float:
    """The definition (PostgreSQL's ``percentile_cont``): interpolate at position ``f * (n - 1)``."""
    ordered = sorted(values)
    pos = fraction * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (pos - low) * (ordered[high] - ordered[low])


def seed(db: Database, now: float) -> None:
    db.run(lambda conn: _calls(conn, now))
    db.run(lambda conn: _runs(conn))
    db.run(lambda conn: _reviews(conn, now))
    db.run(lambda conn: _searches(conn, now))


def _calls(conn: Conn, now: float) -> None:
    # model a: 100 calls, latency 1..100 ms; 5 rate limited, 2 timed out; 10 retried; 10 cache hits;
    # calls 1..40 made by runs r0..r3; every even call streamed with ttft = its latency.
    for i in range(1, 101):
        record = CallRecord(
            "a",
            started_at=now - HOUR,
            provider="p",
            model="a",
            workflow="triage",
            run_id=f"r{i % 4}" if i <= 40 else None,
            status="error" if i <= 7 else "ok",
            error_class="RateLimited" if i <= 5 else "Timeout" if i <= 7 else None,
            usage=Usage(10, 5),
            cost=0.01,
            latency_ms=float(i),
            ttft_ms=float(i) if i % 2 == 0 else None,
            cache_hit=i > 90,
            attempts=2 if i <= 10 else 1,
        )
        insert_record(conn, record, 4096, False)
    # model b: 10 calls, latency 10..100 ms, through one key (half under its daily-budget scope).
    for j in range(1, 11):
        key = "k1@2024-01-01" if j % 2 else "k1"
        record = CallRecord("b", started_at=now - 2 * HOUR, provider="p", model="b", workflow="digest")
        record.virtual_key, record.cost, record.latency_ms = key, 0.1, 10.0 * j
        insert_record(conn, record, 4096, False)
    # outside a 24 hour window
    insert_record(conn, CallRecord("a", started_at=now - 72 * HOUR, cost=5.0, latency_ms=1e6), 4096, False)


def _runs(conn: Conn) -> None:
    for n, queue in enumerate(["default", "default", "default", "mail"]):
        new = {"workflow": "w", "version": None, "queue": queue, "priority": 0, "input_json": b"{}"}
        insert_run(conn, run_id=f"run{n}", blob_threshold=4096, **new)
    finish_run(conn, "run0", status="completed")
    finish_run(conn, "run1", status="completed")
    finish_run(conn, "run2", status="failed")


def _reviews(conn: Conn, now: float) -> None:
    for n in range(3):
        request = NewRequest(f"rev{n}", f"run{n}", 1, "approval", "send", "medium", None, {}, "reject")
        create_request(conn, request, 4096)
    set_status(conn, "rev0", "approved", by="ann")
    set_status(conn, "rev1", "rejected", by="ann")
    # When they were asked: 10 s and 30 s before their decisions, and 100 s before ``now``.
    conn.execute("UPDATE reviews SET created_at = decided_at - 10 WHERE id = 'rev0'")
    conn.execute("UPDATE reviews SET created_at = decided_at - 30 WHERE id = 'rev1'")
    conn.execute("UPDATE reviews SET created_at = ? WHERE id = 'rev2'", (now - 100,))


def _searches(conn: Conn, now: float) -> None:
    for hits, top in ((3, 0.5), (0, None), (1, 0.3), (2, 0.4)):
        log_search(conn, SearchLog(now - 2 * HOUR, ("customer:1",), 5, hits, top, "run0", 2))
    log_search(conn, SearchLog(now - 72 * HOUR, ("customer:1",), 5, 0, None))


A_LATENCY = [float(i) for i in range(1, 101)]
B_LATENCY = [10.0 * j for j in range(1, 11)]
