"""Webhook deliveries as rows: replay protection and the completion-callback outbox.

A delivery is keyed by the SHA-256 of the signature it arrived with. It is kept until its timestamp can
no longer pass the tolerance window (after which the timestamp check alone rejects a replay), or, when it
asked for a completion callback, until that callback has been delivered or given up on. This module
alone issues SQL on ``webhook_deliveries``; whether a run has finished is asked of
:mod:`crewline.flows.run_store`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from ..flows.run_store import finished_among
from ..store.database import Conn
from ..store.dialects import CLAIM

__all__ = ["Callback", "claim_callbacks", "record_delivery", "settle_callback"]

MAX_ATTEMPTS = 8
CALLBACK_LEASE = 60.0


def signature_hash(hook: str, signature: str) -> str:
    return hashlib.sha256(f"{hook}\n{signature}".encode()).hexdigest()


def record_delivery(
    conn: Conn, *, hook: str, signature: str, run_id: str, tolerance: float, callback_url: str | None
) -> bool:
    """Remember a delivery; False if this signature was seen before (a replay), writing nothing."""
    now = time.time()
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE forget_after < ? AND "
        "(callback_state IS NULL OR callback_state IN ('sent', 'failed'))",
        (now,),
    )
    inserted = conn.scalar(
        "INSERT INTO webhook_deliveries (signature_hash, hook, run_id, received_at, forget_after, callback_url, "
        "callback_state, callback_next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (signature_hash) DO NOTHING RETURNING signature_hash",
        (
            signature_hash(hook, signature),
            hook,
            run_id,
            now,
            now + 2 * tolerance + 1,
            callback_url,
            None if callback_url is None else "pending",
            None if callback_url is None else now,
        ),
    )
    return inserted is not None


def is_replay(conn: Conn, hook: str, signature: str) -> bool:
    key = signature_hash(hook, signature)
    return conn.scalar("SELECT 1 FROM webhook_deliveries WHERE signature_hash = ?", (key,)) is not None


_DUE_RUNS = "SELECT DISTINCT run_id FROM webhook_deliveries WHERE callback_state = 'pending' AND callback_next_at <= ?"


@dataclass(frozen=True)
class Callback:
    key: str
    hook: str
    run_id: str
    url: str
    attempts: int


def claim_callbacks(conn: Conn, limit: int = 20) -> list[Callback]:
    """Take due callbacks whose runs have finished, leasing them so other servers skip them."""
    now = time.time()
    due = [r[0] for r in conn.all(_DUE_RUNS, (now,))]
    finished = sorted(finished_among(conn, due))
    if not finished:
        return []
    # The runs are finished and not ours to hold: only the delivery rows are locked.
    rows = conn.all(
        "SELECT signature_hash, hook, run_id, callback_url, callback_attempts FROM webhook_deliveries "
        f"WHERE callback_state = 'pending' AND callback_next_at <= ? AND run_id IN ({', '.join('?' * len(finished))}) "
        f"ORDER BY callback_next_at LIMIT ?{conn.dialect.lock_rows_suffix(CLAIM)}",
        (now, *finished, limit),
    )
    for row in rows:
        conn.execute(
            "UPDATE webhook_deliveries SET callback_next_at = ? WHERE signature_hash = ?",
            (now + CALLBACK_LEASE, row[0]),
        )
    return [Callback(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


def settle_callback(conn: Conn, callback: Callback, error: str | None) -> str:
    """Record one attempt: sent, retried later with backoff, or failed for good. Returns the new state."""
    attempts = callback.attempts + 1
    if error is None:
        state, next_at = "sent", None
    elif attempts >= MAX_ATTEMPTS:
        state, next_at = "failed", None
    else:
        state, next_at = "pending", time.time() + min(3600.0, 5.0 * 2 ** (attempts - 1))
    conn.execute(
        "UPDATE webhook_deliveries SET callback_state = ?, callback_attempts = ?, callback_next_at = ?, "
        "callback_error = ? WHERE signature_hash = ?",
        (state, attempts, next_at, error, callback.key),
    )
    return state
