"""The record of every model call: who asked, what answered, what it cost, how long it took.

One ``model_calls`` row per logical call (a cache hit, a completion after its retries and fallbacks, a
failure), written in the same transaction that settles the call's budget. Request and response payloads go
through :func:`crewline.store.payloads.store_payload`: small ones inline, large ones as content-addressed
blobs that retention can drop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..observe.events import ModelCallEvent
from ..store import Conn
from ..store.payloads import dump, store_payload
from .types import Usage

__all__ = ["CallRecord", "insert_record", "model_call_event", "prune_payloads"]


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
