"""The record of every model call: who asked, what answered, what it cost, how long it took; and its
hourly rollups, which the reports read instead of every call.

One ``model_calls`` row per logical call (a cache hit, a completion after its retries and fallbacks, a
failure), written in the same transaction that settles the call's budget. Request and response payloads
go through :func:`crewline.store.payloads.store_payload`: small ones inline, large ones as
content-addressed blobs that retention can drop. This module alone issues SQL on ``model_calls`` and
``model_call_rollups``.

Reports over long windows cannot sort every call of a month for a percentile, so closed hours are rolled
up, as a metrics system does, into ``model_call_rollups``: per hour and per dimension value (all calls,
model, workflow, key, and the model that answered), the sums and counts (tokens too), errors per class,
latency and time-to-first-token histograms and a sketch of the distinct runs (see
:mod:`crewline.models.call_figures`); per hour, its latency p50 and p95, which the console's chart reads
without merging histograms. Writing a call costs nothing more: rollups are made from the raw rows afterwards, by the workers every minute (:func:`keep_rolled_up`)
and by a report for the hours it needs that are still missing. An hour is rolled up once it closed
:data:`SETTLE_S` ago (the meter writes records in batches, a stream is recorded when it ends but keyed by
when it started); a record that still arrives later is found by id and its hour rolled up again. A
rollup is never rebuilt from fewer records than it holds, so it outlives the deletion of raw rows. A
report reads the rolled-up hours of its window from the rollups and the rest (the partial first hour,
the hours not rolled up yet) from the raw rows. Hours rolled up before the rollups carried token sums
were rolled up again from their raw rows by the migration that added them; those whose raw rows were no
longer all there are marked (``model_call_hours.tokens = 0``) and the spend report reads them raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..errors import DatabaseUnavailable
from ..observe.events import ModelCallEvent
from ..store import Conn, Database
from ..store.dialects import Percentiles
from ..store.payloads import dump, store_payload
from .call_figures import TOKENS, CallFigures, CallRows, Histogram, RunSketch, group_figures
from .types import Usage

__all__ = [
    "CALL_GROUPS",
    "SETTLE_S",
    "CallRecord",
    "CallWindow",
    "GroupFigures",
    "Rolled",
    "call_percentiles",
    "call_window",
    "hourly_latency",
    "insert_record",
    "keep_rolled_up",
    "model_call_event",
    "model_hours",
    "prune_payloads",
    "refill_rollups",
    "roll_up",
    "spend_rows",
]

log = logging.getLogger("crewline.models")
HOUR = 3600
SETTLE_S = 300.0  # an hour is rolled up once it closed this long ago
_ID_LAG_S = 60.0
# "answered": the spend report's model, the one that answered ("-" for a call none answered); its rows
# carry only the sums, no histograms or sketches.
ROLLUP_DIMS = ("", "model", "workflow", "key", "answered")
_ANSWERED = "COALESCE(provider || '/' || model, '-')"

# A key with a daily budget is recorded under its day's ledger scope, ``<id>@<YYYY-MM-DD>``: one key.
_KEY_ID = (
    "CASE WHEN SUBSTR(virtual_key, LENGTH(virtual_key) - 10, 1) = '@' THEN SUBSTR(virtual_key, 1, LENGTH(virtual_key) - 11) "
    "ELSE COALESCE(virtual_key, '-') END"
)
CALL_GROUPS = {
    "": "''",
    "model": "COALESCE(provider || '/' || model, requested)",
    "workflow": "COALESCE(workflow, '-')",
    "key": _KEY_ID,
    "answered": _ANSWERED,
    "day": "",  # the dialect's time buckets, see _group
    "hour": "",
}
_BUCKETS = {"day": 86400, "hour": 3600}


@dataclass
class CallRecord:
    requested: str
    kind: str = "complete"  # complete | stream | embed
    started_at: float = field(default_factory=time.time)
    run_id: str | None = None
    step: int | None = None
    workflow: str | None = None
    virtual_key: str | None = None
    provider: str | None = None
    model: str | None = None
    deployment: str | None = None
    status: str = "ok"
    error_class: str | None = None
    error_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    price_known: bool = True
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache_hit: bool = False
    attempts: int = 1
    request: Any = None
    response: Any = None


def insert_record(conn: Conn, r: CallRecord, payload_threshold: int, keep_payloads: bool) -> None:
    req_inline = req_blob = resp_inline = resp_blob = None
    if keep_payloads and r.request is not None:
        req_inline, req_blob = store_payload(conn, dump(r.request), payload_threshold)
    if keep_payloads and r.response is not None:
        resp_inline, resp_blob = store_payload(conn, dump(r.response), payload_threshold)
    u = r.usage
    conn.execute(
        "INSERT INTO model_calls (started_at, day, run_id, step, workflow, virtual_key, requested, kind, provider, "
        "model, deployment, status, error_class, error_message, input_tokens, output_tokens, cache_read_tokens, "
        "cache_write_tokens, reasoning_tokens, cost, price_known, latency_ms, ttft_ms, cache_hit, attempts, "
        "request, request_blob, response, response_blob) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            r.started_at,
            datetime.fromtimestamp(r.started_at, UTC).strftime("%Y-%m-%d"),
            r.run_id,
            r.step,
            r.workflow,
            r.virtual_key,
            r.requested,
            r.kind,
            r.provider,
            r.model,
            r.deployment,
            r.status,
            r.error_class,
            (r.error_message or "")[:2000] or None,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
            r.cost,
            int(r.price_known),
            r.latency_ms,
            r.ttft_ms,
            int(r.cache_hit),
            r.attempts,
            req_inline,
            req_blob,
            resp_inline,
            resp_blob,
        ),
    )


def prune_payloads(conn: Conn, older_than: float, now: float | None = None) -> int:
    """Drop the request/response payloads of calls older than ``older_than`` seconds, keeping their
    metrics (tokens, cost, latency); returns how many rows lost payloads. Blobs nothing references any
    more are then collected by :func:`crewline.store.retention.prune`."""
    cutoff = (time.time() if now is None else now) - older_than
    return int(
        conn.execute(
            "UPDATE model_calls SET request = NULL, request_blob = NULL, response = NULL, response_blob = NULL "
            "WHERE started_at < ? AND (request IS NOT NULL OR request_blob IS NOT NULL "
            "OR response IS NOT NULL OR response_blob IS NOT NULL)",
            (cutoff,),
        ).rowcount
    )


def model_call_event(record: CallRecord, *, content: bool = False) -> ModelCallEvent:
    """What observers are told about a finished call; its request and reply only with ``content``."""
    u = record.usage
    return ModelCallEvent(
        operation="embeddings" if record.kind == "embed" else "chat",
        requested=record.requested,
        started_at=record.started_at,
        duration_s=(record.latency_ms or 0.0) / 1000,
        provider=record.provider,
        model=record.model,
        run_id=record.run_id,
        workflow=record.workflow,
        step=record.step,
        key=record.virtual_key,
        streamed=record.kind == "stream",
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        reasoning_tokens=u.reasoning_tokens,
        cost=record.cost,
        price_known=record.price_known,
        ttft_s=None if record.ttft_ms is None else record.ttft_ms / 1000,
        attempts=record.attempts,
        cache_hit=record.cache_hit,
        error_type=record.error_class,
        request=record.request if content else None,
        response=record.response if content else None,
    )


# What spend can be grouped by, as SQL over model_calls, and the dimension of the rollups that holds it
# (by day: all calls, ``dim = ''``, their hours added up per day).
GROUPS = {
    "day": "",  # the dialect's day buckets, see _raw_spend
    "model": _ANSWERED,
    "workflow": "COALESCE(workflow, '-')",
    "key": "COALESCE(virtual_key, '-')",
}
_SPEND_DIMS = {"day": "", "model": "answered", "workflow": "workflow", "key": "key"}
_SPEND_SUMS = "SUM(calls), SUM(cache_hits), SUM(errors), SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(unpriced)"
_SPEND_RAW = (
    "COUNT(*), SUM(cache_hit), SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), SUM(input_tokens), "
    "SUM(output_tokens), SUM(cost), SUM(CASE WHEN price_known = 0 THEN 1 ELSE 0 END)"
)

_CALL_COLUMNS = (
    "id, started_at, run_id, step, workflow, virtual_key, requested, kind, provider, model, deployment, status, "
    "error_class, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, "
    "price_known, latency_ms, ttft_ms, cache_hit, attempts"
)


def spend_rows(
    conn: Conn, groups: tuple[str, ...], since: float, run_id: str | None
) -> dict[str, list[tuple[Any, ...]]]:
    """Per group of ``groups`` (keys of :data:`GROUPS`), per value in order, since ``since``: (value,
    calls, cache hits, errors, input and output tokens, cost, unpriced calls). The hours rolled up with
    their token sums are read from the rollups, the rest from the raw rows; a run's calls from the raw
    rows, through their index."""
    spans: list[tuple[int, int]] = []
    if run_id is None:
        hours = "SELECT hour FROM model_call_hours WHERE hour >= ? AND tokens = 1 ORDER BY hour"
        spans = _spans(conn.all(hours, (_ceil_hour(since),)))
    ranges = _raw_ranges(since, spans)
    out: dict[str, list[tuple[Any, ...]]] = {}
    for group in groups:
        totals: dict[str, list[Any]] = {}
        for value, *sums in _rolled_spend(conn, group, spans) + _raw_spend(conn, group, ranges, run_id):
            into = totals.setdefault(str(value), [0, 0, 0, 0, 0, 0.0, 0])
            for i, n in enumerate(sums):
                into[i] += float(n or 0) if i == 5 else int(n or 0)
        out[group] = [(value, *sums) for value, sums in sorted(totals.items())]
    return out


def _rolled_spend(conn: Conn, group: str, spans: list[tuple[int, int]]) -> list[tuple[Any, ...]]:
    if not spans:
        return []
    where = "dim = ? AND (" + " OR ".join("(hour >= ? AND hour < ?)" for _ in spans) + ")"
    key = "(hour / 86400) * 86400" if group == "day" else "value"
    rows = conn.all(
        f"SELECT {key} AS g, {_SPEND_SUMS} FROM model_call_rollups WHERE {where} GROUP BY g",
        (_SPEND_DIMS[group], *(bound for span in spans for bound in span)),
    )
    return _dated(rows) if group == "day" else rows


def _dated(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows keyed by the start of their UTC day in seconds, keyed by the day's date instead."""
    return [(datetime.fromtimestamp(int(day), UTC).strftime("%Y-%m-%d"), *sums) for day, *sums in rows]


def _raw_spend(
    conn: Conn, group: str, ranges: list[tuple[float, float | None]], run_id: str | None
) -> list[tuple[Any, ...]]:
    # Days as time buckets, not the ``day`` column: its index would make the planner read row by row.
    key = conn.dialect.time_bucket("started_at", 86400) if group == "day" else GROUPS[group]
    rows: list[tuple[Any, ...]] = []
    for low, high in ranges:
        where, params = _open_range(low, high)
        if run_id is not None:
            where, params = where + " AND run_id = ?", (*params, run_id)
        rows += conn.all(f"SELECT {key} AS k, {_SPEND_RAW} FROM model_calls WHERE {where} GROUP BY k", params)
    return _dated(rows) if group == "day" else rows


def call_rows(
    conn: Conn,
    *,
    run_id: str | None = None,
    workflow: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Call records newest first (``before_id`` pages back), as column -> value; payloads left out."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("run_id", run_id), ("workflow", workflow), ("status", status), ("id", before_id)):
        if value is not None:
            where.append(f"{column} {'<' if column == 'id' else '='} ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.all(
        f"SELECT {_CALL_COLUMNS} FROM model_calls{clause} ORDER BY id DESC LIMIT ?", (*params, limit)
    )
    names = [c.strip() for c in _CALL_COLUMNS.split(",")]
    out = [dict(zip(names, r, strict=True)) for r in rows]
    for row in out:
        row["price_known"], row["cache_hit"] = bool(row["price_known"]), bool(row["cache_hit"])
    return out


_USAGE = "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(CASE WHEN price_known = 0 THEN 1 ELSE 0 END)"


def usage_rows(
    conn: Conn,
    *,
    run_ids: list[str] | None = None,
    run_id: str | None = None,
    steps: tuple[int, int] | None = None,
) -> list[tuple[Any, ...]]:
    """(run_id, calls, input tokens, output tokens, cost, unpriced calls) per run of ``run_ids``, or the
    same per step (step first) of ``run_id``, only of its steps ``first..last`` when ``steps`` says so
    (a page of a long run's timeline)."""
    if run_id is not None:
        where, params = "run_id = ?", list[Any]([run_id])
        if steps is not None:
            where, params = "run_id = ? AND step BETWEEN ? AND ?", [run_id, *steps]
        return conn.all(f"SELECT step, {_USAGE} FROM model_calls WHERE {where} GROUP BY step", params)
    if not run_ids:
        return []
    return conn.all(
        f"SELECT run_id, {_USAGE} FROM model_calls WHERE run_id IN ({', '.join('?' * len(run_ids))}) "
        "GROUP BY run_id",
        run_ids,
    )


def _calls_filter(model: str | None, workflow: str | None) -> tuple[str, list[object]]:
    sql, params = "", list[object]()
    if model is not None:
        sql += " AND (model = ? OR requested = ? OR deployment = ?)"
        params += [model] * 3
    if workflow is not None:
        sql += " AND workflow = ?"
        params.append(workflow)
    return sql, params


def call_outcomes(conn: Conn, since: float, model: str | None, workflow: str | None) -> tuple[int, int, int]:
    """(calls, failed, retried) since ``since``, for a model (asked for, answering or deployment) and a
    workflow when given."""
    where, params = _calls_filter(model, workflow)
    row = conn.one(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), 0) FROM model_calls WHERE started_at >= ?{where}",
        (since, *params),
    )
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def cost_split(
    conn: Conn, since: float, split: float, model: str | None, workflow: str | None
) -> tuple[float, float]:
    """(cost from ``split`` on, cost from ``since`` to ``split``), filtered like :func:`call_outcomes`."""
    where, params = _calls_filter(model, workflow)
    row = conn.one(
        "SELECT COALESCE(SUM(CASE WHEN started_at >= ? THEN cost ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN started_at < ? THEN cost ELSE 0 END), 0) "
        f"FROM model_calls WHERE started_at >= ?{where}",
        (split, split, since, *params),
    )
    return (float(row[0]), float(row[1])) if row else (0.0, 0.0)


def _group(conn: Conn, by: str) -> str:
    # Days as time buckets too, not the ``day`` column: its index would make the report read row by row.
    return conn.dialect.time_bucket("started_at", _BUCKETS[by]) if by in _BUCKETS else CALL_GROUPS[by]


def call_percentiles(conn: Conn, by: str, since: float) -> dict[Any, tuple[float | None, ...]]:
    """Per group: latency p50, p95, p99 and time to first token p50, p95 (milliseconds; interpolated)."""
    latency = _percentiles(conn, by, since, "latency_ms", (0.5, 0.95, 0.99))
    ttft = _percentiles(conn, by, since, "ttft_ms", (0.5, 0.95))
    return {g: latency.get(g, (None,) * 3) + ttft.get(g, (None,) * 2) for g in latency.keys() | ttft.keys()}


def _percentiles(
    conn: Conn, by: str, since: float, column: str, fractions: tuple[float, ...]
) -> dict[Any, tuple[float | None, ...]]:
    q = Percentiles("model_calls", column, fractions, "started_at >= ?", _group(conn, by))
    rows = conn.all(conn.dialect.percentiles_sql(q), (since,))
    return {r[0]: tuple(None if v is None else float(v) for v in r[1:]) for r in rows}


def _exact_runs(conn: Conn, by: str, since: float) -> dict[Any, int]:
    rows = conn.all(
        f"SELECT {_group(conn, by)} AS g, COUNT(DISTINCT run_id) FROM model_calls WHERE started_at >= ? GROUP BY g",
        (since,),
    )
    return {g: int(n) for g, n in rows}


# -- the window a report reads: rollups for the hours they cover, raw rows around them ----------------


@dataclass(frozen=True)
class CallWindow:
    """The calls from ``since`` on, grouped ``by`` one of :data:`CALL_GROUPS` (``""``: all together).
    ``exact``: percentiles and run counts from the raw rows (short windows); else from the rollups."""

    since: float
    by: str = ""
    exact: bool = True
    rollups: bool = True  # False: read only raw rows, as before there were rollups
    # True: only the sums (calls, cost, errors, ...), for a page that shows no percentiles or run counts;
    # reading neither the raw rows' latencies nor the rollups' histograms is ~50x cheaper over a day.
    sums_only: bool = False


@dataclass(frozen=True)
class GroupFigures:
    figures: CallFigures
    latency: tuple[float | None, ...]  # p50, p95, p99 in milliseconds
    ttft: tuple[float | None, ...]  # p50, p95
    runs: int


def call_window(conn: Conn, window: CallWindow) -> dict[Any, GroupFigures]:
    """The figures per group of the calls in ``window``: the rolled-up hours inside it read from the
    rollups, everything else (its partial first hour, the hours not rolled up yet) from the raw rows."""
    by, shapes = window.by, not window.exact and not window.sums_only
    parts: dict[Any, list[CallFigures]] = {}
    spans: list[tuple[int, int]] = []
    if window.rollups:
        # The hours first, and only theirs read: one rolled up meanwhile is read raw, not twice.
        first = _ceil_hour(window.since)
        spans = _spans(conn.all("SELECT hour FROM model_call_hours WHERE hour >= ? ORDER BY hour", (first,)))
        for key, figures in _rolled_figures(conn, by, spans, shapes).items():
            parts.setdefault(key, []).append(figures)
    for key, figures in _raw_figures(conn, _group(conn, by), _raw_ranges(window.since, spans)).items():
        parts.setdefault(key, []).append(figures)
    merged = {key: CallFigures.merged(p, shapes) for key, p in sorted(parts.items())}
    if window.sums_only:
        return {key: GroupFigures(f, (None,) * 3, (None,) * 2, 0) for key, f in merged.items()}
    if shapes:
        return {
            key: GroupFigures(
                f, f.latency.percentiles(_LATENCY), f.ttft.percentiles(_TTFT), f.runs.estimate()
            )
            for key, f in merged.items()
        }
    pct, runs = call_percentiles(conn, by, window.since), _exact_runs(conn, by, window.since)
    return {
        key: GroupFigures(f, pct.get(key, (None,) * 5)[:3], pct.get(key, (None,) * 5)[3:], runs.get(key, 0))
        for key, f in merged.items()
    }


def model_hours(conn: Conn, since: float) -> list[tuple[int, str, int, float]]:
    """(hour, model, calls, cost) from ``since`` on, for charts: rolled-up hours read from the rollups,
    the rest (the partial first hour, hours not rolled up yet) from the raw rows, like :func:`call_window`."""
    spans = _spans(
        conn.all("SELECT hour FROM model_call_hours WHERE hour >= ? ORDER BY hour", (_ceil_hour(since),))
    )
    out: list[tuple[int, str, int, float]] = []
    if spans:
        where = "dim = 'model' AND (" + " OR ".join("(hour >= ? AND hour < ?)" for _ in spans) + ")"
        rows = conn.all(
            f"SELECT hour, value, calls, cost FROM model_call_rollups WHERE {where}",
            [bound for span in spans for bound in span],
        )
        out += [(int(h), str(m), int(n), float(c)) for h, m, n, c in rows]
    bucket = conn.dialect.time_bucket("started_at", HOUR)
    for low, high in _raw_ranges(since, spans):
        where, params = _open_range(low, high)
        rows = conn.all(
            f"SELECT {bucket} AS h, {CALL_GROUPS['model']} AS m, COUNT(*), SUM(cost) FROM model_calls "
            f"WHERE {where} GROUP BY h, m",
            params,
        )
        out += [(int(h), str(m), int(n), float(c or 0)) for h, m, n, c in rows]
    return sorted(out)


def hourly_latency(conn: Conn, since: float) -> dict[int, tuple[float | None, float | None]]:
    """Latency p50 and p95 (milliseconds) per hour from ``since`` on, for charts: each rolled-up hour's
    as stored with it, the rest's from the raw rows' histograms (the same way, so they read alike)."""
    hours = conn.all(
        "SELECT hour, calls, latency_p50, latency_p95 FROM model_call_hours WHERE hour >= ? ORDER BY hour",
        (_ceil_hour(since),),
    )
    out = {int(h): (_ms(p50), _ms(p95)) for h, calls, p50, p95 in hours if int(calls)}
    bucket = conn.dialect.time_bucket("started_at", HOUR)
    for hour, figures in _raw_figures(conn, bucket, _raw_ranges(since, _spans(hours))).items():
        p50, p95 = figures.latency.percentiles(_CHART)
        out[int(hour)] = (p50, p95)
    return out


def _ms(value: Any) -> float | None:
    return None if value is None else float(value)


_LATENCY = (0.5, 0.95, 0.99)
_TTFT = (0.5, 0.95)
_CHART = (0.5, 0.95)
_SUMS = ("calls", "cost", "errors", "retried", "cache_hits", "unpriced", "run_cost")
_ROLLUP_KEYS = {"hour": "hour", "day": "(hour / 86400) * 86400"}


def _spans(hours: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    """Consecutive hours as ``[start, end)`` spans."""
    spans: list[tuple[int, int]] = []
    for hour, *_ in hours:
        if spans and spans[-1][1] == int(hour):
            spans[-1] = (spans[-1][0], int(hour) + HOUR)
        else:
            spans.append((int(hour), int(hour) + HOUR))
    return spans


def _rolled_figures(
    conn: Conn, by: str, spans: list[tuple[int, int]], shapes: bool
) -> dict[Any, CallFigures]:
    """The rollups of the hours in ``spans``, added up per group in SQL; histograms and sketches merged
    here, each group's in one go."""
    if not spans:
        return {}
    key = _ROLLUP_KEYS.get(by, "value")
    where = "dim = ? AND (" + " OR ".join("(hour >= ? AND hour < ?)" for _ in spans) + ")"
    params = ("" if by in _BUCKETS else by, *(bound for span in spans for bound in span))
    sums = ", ".join(f"SUM({name})" for name in _SUMS)
    out: dict[Any, CallFigures] = {}
    for g, calls, cost, *counts, run_cost in conn.all(
        f"SELECT {key} AS g, {sums} FROM model_call_rollups WHERE {where} GROUP BY g", params
    ):
        errors, retried, cache_hits, unpriced = (int(n) for n in counts)
        out[g] = CallFigures(int(calls), float(cost), errors, retried, cache_hits, unpriced, float(run_cost))
    for g, error_class, n in conn.all(
        f"SELECT {key} AS g, error_class, SUM(calls) FROM model_call_rollup_errors WHERE {where} "
        "GROUP BY g, error_class",
        params,
    ):
        if g in out:
            out[g].errors_by_class[str(error_class)] = int(n)
    if shapes:
        blobs: dict[Any, tuple[list[bytes], list[bytes], list[bytes]]] = {g: ([], [], []) for g in out}
        for g, latency, ttft, runs in conn.all(
            f"SELECT {key}, latency, ttft, runs FROM model_call_rollups WHERE {where}", params
        ):
            if g in blobs:
                for kept, blob in zip(blobs[g], (latency, ttft, runs), strict=True):
                    kept.append(bytes(blob))
        for g, (latency, ttft, runs) in blobs.items():
            out[g].latency = Histogram.from_bytes(b"".join(latency))
            out[g].ttft = Histogram.from_bytes(b"".join(ttft))
            out[g].runs = RunSketch.from_bytes(b"".join(runs))
    return out


def _raw_ranges(since: float, spans: list[tuple[int, int]]) -> list[tuple[float, float | None]]:
    """``[since, ∞)`` less the rolled-up ``spans``; the last range stays open, as the raw report's was."""
    ranges: list[tuple[float, float | None]] = []
    cursor = since
    for start, end in spans:
        if start > cursor:
            ranges.append((cursor, float(start)))
        cursor = max(cursor, float(end))
    return [*ranges, (cursor, None)]


_RAW_FIGURES = "run_id, status, error_class, cost, price_known, cache_hit, attempts, latency_ms, ttft_ms"


def _raw_figures(conn: Conn, label: str, ranges: list[tuple[float, float | None]]) -> dict[Any, CallFigures]:
    rows: list[tuple[Any, ...]] = []
    for low, high in ranges:
        where, params = _open_range(low, high)
        rows += conn.all(f"SELECT {label}, {_RAW_FIGURES} FROM model_calls WHERE {where}", params)
    if not rows:
        return {}
    return group_figures(CallRows.of([r[1:] for r in rows]), [r[0] for r in rows])


def _hour_range(low: float, high: float) -> tuple[str, tuple[float, float]]:
    return "started_at >= ? AND started_at < ?", (low, high)


def _open_range(low: float, high: float | None) -> tuple[str, tuple[Any, ...]]:
    """A range of :func:`_raw_ranges` as a condition on ``started_at``: ``high`` None leaves it open."""
    return ("started_at >= ?", (low,)) if high is None else _hour_range(low, high)


def _ceil_hour(at: float) -> int:
    return math.ceil(at / HOUR) * HOUR


def _floor_hour(at: float) -> int:
    return math.floor(at / HOUR) * HOUR


# -- rolling up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rolled:
    written: int  # hours rolled up (or rolled up again) by this call
    left: int  # hours still to do, beyond the ``limit``


@dataclass(frozen=True)
class _Plan:
    hours: list[int]  # records written late into these first, then those never rolled up
    state: tuple[int, int, float]  # checked_id, seen_id, seen_at to store once they are done


def roll_up(
    db: Database, since: float | None = None, *, now: float | None = None, limit: int | None = None
) -> Rolled:
    """Roll up every hour from ``since`` (default: the first call's) that closed more than
    :data:`SETTLE_S` ago and has no rollup, and roll up again the hours call records were written into
    after their rollup. Each batch of hours is computed from a read and written in a short transaction,
    so the call log's writers are never held up; two processes doing it at once write each hour once."""
    now = time.time() if now is None else now
    plan = db.query(lambda conn: _plan(conn, since, _floor_hour(now - SETTLE_S), now))
    hours = plan.hours if limit is None else plan.hours[:limit]
    written = 0
    for chunk in _chunks(hours):
        computed = db.query(partial(_compute, hours=chunk))
        written += db.run(partial(_save, computed=computed, now=now))
    if len(hours) == len(plan.hours):
        db.run(lambda conn: _advance(conn, plan.state))
    return Rolled(written, len(plan.hours) - len(hours))


async def keep_rolled_up(db: Database, stopping: asyncio.Event, every: float = 60.0) -> None:
    """A worker chore: roll up what has closed, a day of hours at a time, until ``stopping`` is set."""
    while not stopping.is_set():
        left = 0
        try:
            left = (await asyncio.to_thread(roll_up, db, limit=24)).left
        except DatabaseUnavailable as e:
            log.warning("call rollups: cannot reach the database: %s", e)
        except Exception:
            log.exception("call rollups failed")
        if not left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), every)


def _plan(conn: Conn, since: float | None, ready: int, now: float) -> _Plan:
    late, state = _late_hours(conn, now)
    if since is None:
        first_call = conn.scalar("SELECT MIN(started_at) FROM model_calls")
        if first_call is None:
            return _Plan(late, state)
        start = _floor_hour(float(first_call))
    else:
        start = _ceil_hour(since)
    marked = {
        int(h)
        for (h,) in conn.all("SELECT hour FROM model_call_hours WHERE hour >= ? AND hour < ?", (start, ready))
    }
    missing = [h for h in range(start, ready, HOUR) if h not in marked and h not in late]
    return _Plan(late + missing, state)


def _late_hours(conn: Conn, now: float) -> tuple[list[int], tuple[int, int, float]]:
    """Rolled-up hours that have more call records now than when they were rolled up.

    Only the records added since the last check are read (by id). On PostgreSQL ids are taken before
    commit, so a record can become visible after a higher id: the check starts from the highest id seen
    at least :data:`_ID_LAG_S` ago, which a transaction writing call records never outlasts."""
    top = int(conn.scalar("SELECT MAX(id) FROM model_calls") or 0)
    row = conn.one("SELECT checked_id, seen_id, seen_at FROM model_call_rollup_state WHERE id = 1")
    if row is None:
        return [], (top, top, now)
    checked, seen, seen_at = int(row[0]), int(row[1]), float(row[2])
    state = (seen, top, now) if seen_at <= now - _ID_LAG_S else (checked, seen, seen_at)
    bucket = conn.dialect.time_bucket("started_at", HOUR)
    touched = conn.all(f"SELECT DISTINCT {bucket} FROM model_calls WHERE id > ?", (checked,))
    late = []
    for (hour,) in touched:
        rolled = conn.scalar("SELECT calls FROM model_call_hours WHERE hour = ?", (int(hour),))
        where, params = _hour_range(int(hour), int(hour) + HOUR)
        if rolled is not None and int(
            conn.scalar(f"SELECT COUNT(*) FROM model_calls WHERE {where}", params)
        ) > int(rolled):
            late.append(int(hour))
    return sorted(late), state


def _chunks(hours: list[int]) -> list[list[int]]:
    """Runs of consecutive hours, at most a day each: one read and one short write per run."""
    out: list[list[int]] = []
    for hour in hours:
        if out and hour == out[-1][-1] + HOUR and len(out[-1]) < 24:
            out[-1].append(hour)
        else:
            out.append([hour])
    return out


_HourFigures = dict[int, tuple[int, list[tuple[str, str, CallFigures]]]]


def _compute(conn: Conn, hours: list[int]) -> _HourFigures:
    labels = ", ".join(CALL_GROUPS[d] for d in ROLLUP_DIMS[1:])
    where, params = _hour_range(hours[0], hours[-1] + HOUR)
    rows = conn.all(
        f"SELECT {conn.dialect.time_bucket('started_at', HOUR)}, {labels}, {_RAW_FIGURES}, {', '.join(TOKENS)} "
        f"FROM model_calls WHERE {where}",
        params,
    )
    by_hour: dict[int, list[tuple[Any, ...]]] = {h: [] for h in hours}
    for r in rows:
        by_hour[int(r[0])].append(r)
    out: _HourFigures = {}
    for hour, mine in by_hour.items():
        figures = CallRows.of([r[len(ROLLUP_DIMS) :] for r in mine], tokens=True)
        groups: list[tuple[str, str, CallFigures]] = []
        for i, dim in enumerate(ROLLUP_DIMS):
            labelled = group_figures(figures, [r[i] if i else "" for r in mine])
            groups += [(dim, str(value), f) for value, f in labelled.items()]
        out[hour] = (len(mine), groups)
    return out


def _save(conn: Conn, computed: _HourFigures, now: float, again: bool = False) -> int:
    """Write each hour unless it is already there from as many records or more (another process, or
    raw records since deleted: a rollup never shrinks); ``again``: also over one from as many."""
    conn.lock_key("crewline-call-rollups")
    written = 0
    for hour, (calls, groups) in computed.items():
        rolled = conn.scalar("SELECT calls FROM model_call_hours WHERE hour = ?", (hour,))
        if rolled is not None and (int(rolled) > calls or (int(rolled) == calls and not again)):
            continue
        conn.execute("DELETE FROM model_call_rollups WHERE hour = ?", (hour,))
        everything = [f for dim, _, f in groups if dim == ""]
        p50, p95 = everything[0].latency.percentiles(_CHART) if everything else (None, None)
        conn.execute(
            "INSERT INTO model_call_hours (hour, calls, rolled_at, tokens, latency_p50, latency_p95) "
            "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (hour) DO UPDATE SET calls = excluded.calls, "
            "rolled_at = excluded.rolled_at, tokens = 1, latency_p50 = excluded.latency_p50, "
            "latency_p95 = excluded.latency_p95",
            (hour, calls, now, p50, p95),
        )
        conn.execute("DELETE FROM model_call_rollup_errors WHERE hour = ?", (hour,))
        for dim, value, f in groups:
            _save_group(conn, hour, dim, value, f)
        written += 1
    return written


_ROLLUP_INSERT = (
    f"INSERT INTO model_call_rollups (hour, dim, value, {', '.join(_SUMS)}, {', '.join(TOKENS)}, latency, ttft, "
    f"runs) VALUES ({', '.join('?' * (6 + len(_SUMS) + len(TOKENS)))})"
)


def _save_group(conn: Conn, hour: int, dim: str, value: str, f: CallFigures) -> None:
    if dim == "answered":  # only the spend report reads these, and only their sums
        conn.defer(_ROLLUP_INSERT, (hour, dim, value, *_sums(f), *f.tokens, b"", b"", b""))
        return
    shapes = (f.latency.to_bytes(), f.ttft.to_bytes(), f.runs.to_bytes())
    conn.defer(_ROLLUP_INSERT, (hour, dim, value, *_sums(f), *f.tokens, *shapes))
    for error_class, n in f.errors_by_class.items():
        conn.defer(
            "INSERT INTO model_call_rollup_errors (hour, dim, value, error_class, calls) VALUES (?, ?, ?, ?, ?)",
            (hour, dim, value, error_class, n),
        )


def _sums(f: CallFigures) -> tuple[Any, ...]:
    return (f.calls, f.cost, f.errors, f.retried, f.cache_hits, f.unpriced, f.run_cost)


def refill_rollups(conn: Conn) -> None:
    """Once, by the migration that gave the rollups their token sums: roll up again every hour rolled up
    before whose raw rows are all still there. The others keep ``tokens = 0`` (the spend report reads
    them raw, as it always did) and get their chart percentiles from their stored histogram."""
    rolled = {
        int(h): int(n) for h, n in conn.all("SELECT hour, calls FROM model_call_hours WHERE tokens = 0")
    }
    if not rolled:
        return
    bucket = conn.dialect.time_bucket("started_at", HOUR)
    raw = {int(h): int(n) for h, n in conn.all(f"SELECT {bucket} AS h, COUNT(*) FROM model_calls GROUP BY h")}
    complete = sorted(h for h, n in rolled.items() if raw.get(h, 0) >= n)
    now = time.time()
    for chunk in _chunks(complete):
        _save(conn, _compute(conn, chunk), now, again=True)
    for hour, blob in conn.all(
        "SELECT r.hour, r.latency FROM model_call_rollups r JOIN model_call_hours h ON h.hour = r.hour "
        "WHERE h.tokens = 0 AND r.dim = ''"
    ):
        p50, p95 = Histogram.from_bytes(bytes(blob)).percentiles(_CHART)
        conn.execute(
            "UPDATE model_call_hours SET latency_p50 = ?, latency_p95 = ? WHERE hour = ?",
            (p50, p95, int(hour)),
        )


def _advance(conn: Conn, state: tuple[int, int, float]) -> None:
    conn.execute(
        "INSERT INTO model_call_rollup_state (id, checked_id, seen_id, seen_at) VALUES (1, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET checked_id = excluded.checked_id, seen_id = excluded.seen_id, "
        "seen_at = excluded.seen_at WHERE model_call_rollup_state.seen_at < excluded.seen_at",
        state,
    )
