"""Payloads (run inputs, step outputs, event bodies) as JSON, small ones inline, large ones as blobs.

A payload over the store's threshold goes to the content-addressed ``blobs`` table (keyed by its SHA-256)
and the row keeps only the hash, so big model replies do not bloat the hot tables, identical payloads are
stored once, and retention can drop them in one place.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pydantic_core

from .database import Conn

__all__ = ["dump", "load", "load_json", "store_payload"]


def dump(value: Any) -> bytes:
    """JSON bytes of ``value``; Pydantic models, dataclasses, datetimes and sets are understood."""
    return pydantic_core.to_json(value)


def load_json(text: str | bytes) -> Any:
    return pydantic_core.from_json(text)


def store_payload(conn: Conn, data: bytes, threshold: int) -> tuple[str | None, str | None]:
    """``(inline_text, None)`` for a small payload, ``(None, blob_hash)`` after storing a large one."""
    if len(data) <= threshold:
        return data.decode("utf-8"), None
    digest = hashlib.sha256(data).hexdigest()
    conn.defer(
        "INSERT INTO blobs (hash, data, size, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
        (digest, data, len(data), time.time()),
    )
    return None, digest


def load(conn: Conn, inline: str | None, blob: str | None) -> Any:
    """The value stored by :func:`store_payload` (``None`` if neither part is set, e.g. after pruning)."""
    if inline is not None:
        return pydantic_core.from_json(inline)
    if blob is None:
        return None
    data = conn.scalar("SELECT data FROM blobs WHERE hash = ?", (blob,))
    if data is None:
        return None
    return pydantic_core.from_json(bytes(data))
