"""The record of every model call: who asked, what answered, what it cost, how long it took.

One ``model_calls`` row per logical call (a cache hit, a completion after its retries and fallbacks, a
failure), written in the same transaction that settles the call's budget. Request and response payloads
go through :func:`crewline.store.payloads.store_payload`: small ones inline, large ones as
content-addressed blobs that retention can drop. The reports over the calls (totals, latency
percentiles, error classes per model, workflow, key, day or hour) are computed here, in SQL. This module alone issues SQL on
``model_calls``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..observe.events import ModelCallEvent
from ..store import Conn
from ..store.dialects import Percentiles
from ..store.payloads import dump, store_payload
from .types import Usage

__all__ = [
    "CALL_GROUPS",
    "CallRecord",
    "call_error_classes",
    "call_percentiles",
    "call_totals",
    "insert_record",
    "model_call_event",
    "prune_payloads",
]

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


# What spend can be grouped by, as SQL over model_calls.
GROUPS = {
    "day": "day",
    "model": "provider || '/' || model",
    "workflow": "COALESCE(workflow, '-')",
    "key": "COALESCE(virtual_key, '-')",
}

_CALL_COLUMNS = (
    "id, started_at, run_id, step, workflow, virtual_key, requested, kind, provider, model, deployment, status, "
    "error_class, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, "
    "price_known, latency_ms, ttft_ms, cache_hit, attempts"
)


def spend_rows(conn: Conn, group: str, since: float, run_id: str | None) -> list[tuple[Any, ...]]:
    """Per value of ``group`` (a key of :data:`GROUPS`) since ``since``: calls, cache hits, errors, input
    and output tokens, cost, unpriced calls."""
    where, params = "started_at >= ?", list[Any]([since])
    if run_id:
        where, params = where + " AND run_id = ?", [*params, run_id]
    return conn.all(
        f"SELECT {GROUPS[group]} AS k, COUNT(*), SUM(cache_hit), SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
        "SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(CASE WHEN price_known = 0 THEN 1 ELSE 0 END) "
        f"FROM model_calls WHERE {where} GROUP BY k ORDER BY k",
        params,
    )


def call_rows(
    conn: Conn,
    *,
    run_id: str | None = None,
    workflow: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Call records newest first, as column -> value (payloads left out)."""
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
    return [dict(zip(names, r, strict=True)) for r in rows]


_USAGE = "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(CASE WHEN price_known = 0 THEN 1 ELSE 0 END)"


def usage_rows(
    conn: Conn, *, run_ids: list[str] | None = None, run_id: str | None = None
) -> list[tuple[Any, ...]]:
    """(run_id, calls, input tokens, output tokens, cost, unpriced calls) per run of ``run_ids``, or the
    same per step (step first) of ``run_id``."""
    if run_id is not None:
        return conn.all(f"SELECT step, {_USAGE} FROM model_calls WHERE run_id = ? GROUP BY step", (run_id,))
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


def call_totals(conn: Conn, by: str, since: float) -> list[tuple[Any, ...]]:
    """Per group (``by`` one of :data:`CALL_GROUPS`, ``""`` for all) since ``since``: group, calls, cost,
    errors, calls retried, cache hits, unpriced calls, cost of calls made by runs, runs."""
    return conn.all(
        f"SELECT {_group(conn, by)} AS g, COUNT(*), SUM(cost), SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), SUM(cache_hit), "
        "SUM(CASE WHEN price_known = 0 THEN 1 ELSE 0 END), SUM(CASE WHEN run_id IS NULL THEN 0 ELSE cost END), "
        "COUNT(DISTINCT run_id) FROM model_calls WHERE started_at >= ? GROUP BY g ORDER BY g",
        (since,),
    )


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


def call_error_classes(conn: Conn, by: str, since: float) -> list[tuple[Any, str, int]]:
    """Per group and error class since ``since``: how many calls failed with it."""
    rows = conn.all(
        f"SELECT {_group(conn, by)} AS g, COALESCE(error_class, 'unknown'), COUNT(*) FROM model_calls "
        "WHERE started_at >= ? AND status = 'error' GROUP BY g, error_class ORDER BY g, error_class",
        (since,),
    )
    return [(g, str(c), int(n)) for g, c, n in rows]
