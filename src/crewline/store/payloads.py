"""Payloads (run inputs, step outputs, event bodies) as JSON, small ones inline, large ones as blobs.

A payload over the store's threshold goes to the content-addressed ``blobs`` table (keyed by its SHA-256)
and the row keeps only the hash, so big model replies do not bloat the hot tables, identical payloads are
stored once, and retention can drop them in one place. This module alone issues SQL on ``blobs``.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pydantic_core

from ..errors import InvalidInput
from .database import Conn

__all__ = [
    "MAX_DEPTH",
    "Unreadable",
    "check_depth",
    "delete_blob",
    "drop_unreferenced",
    "dump",
    "json_text",
    "load",
    "load_json",
    "load_or_unreadable",
    "parse_json",
    "put_blob",
    "put_blobs",
    "store_payload",
]

_INSERT_BLOB = (
    "INSERT INTO blobs (hash, data, size, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING"
)

MAX_DEPTH = 64
"""How deeply JSON payloads may nest, at every entrance (API, events, webhooks, proxy, CLI) and on write.

The JSON reader refuses documents nested deeper than about 200 levels; a payload the writer accepted
but the reader refuses would strand whatever stored it. One limit, far below the reader's and far above
any real document, checked before anything is stored, keeps the two in agreement.
"""


def check_depth(value: Any, what: str = "payload") -> None:
    """Raise :class:`InvalidInput` when ``value`` nests lists and dicts deeper than :data:`MAX_DEPTH`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidInput(_too_deep(what))
        stack.extend((child, depth + 1) for child in children)


def dump(value: Any, what: str = "payload") -> bytes:
    """JSON bytes of ``value``; Pydantic models, dataclasses, datetimes and sets are understood.

    Raises :class:`InvalidInput` for a value nested deeper than :data:`MAX_DEPTH`, which could not be
    read back.
    """
    try:
        data = pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError as e:
        if "depth" in str(e):
            raise InvalidInput(_too_deep(what)) from None
        raise
    # Nesting deeper than the limit needs more brackets than the limit: only then read the value back
    # as the reader will (which also covers Pydantic models and dataclasses).
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:
        try:
            check_depth(pydantic_core.from_json(data), what)
        except ValueError:
            raise InvalidInput(_too_deep(what)) from None
    return data


def json_text(value: dict[str, Any] | None) -> str | None:
    """A small record (an error, an override) as JSON text for a column; None stays NULL, and what JSON
    cannot encode is written as its ``str()``."""
    return None if value is None else json.dumps(value, default=str)


def _too_deep(what: str) -> str:
    return f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it or send it as a string"


def load_json(text: str | bytes) -> Any:
    return pydantic_core.from_json(text)


def parse_json(raw: str | bytes, what: str = "request body") -> Any:
    """Parse untrusted JSON text: :class:`InvalidInput` naming ``what`` when it is not JSON crewline
    can store (malformed, not UTF-8, nested deeper than :data:`MAX_DEPTH`)."""
    try:
        value = pydantic_core.from_json(raw)
    except ValueError as e:
        reason = str(e)
        if "recursion" in reason:
            reason = f"nested more than {MAX_DEPTH} levels deep"
        raise InvalidInput(f"{what} is not valid JSON: {reason}") from None
    check_depth(value, what)
    return value


def store_payload(conn: Conn, data: bytes, threshold: int) -> tuple[str | None, str | None]:
    """``(inline_text, None)`` for a small payload, ``(None, blob_hash)`` after storing a large one."""
    if len(data) <= threshold:
        return data.decode("utf-8"), None
    digest = hashlib.sha256(data).hexdigest()
    conn.defer(_INSERT_BLOB, (digest, data, len(data), time.time()))
    return None, digest


def put_blob(conn: Conn, data: bytes, now: float) -> str:
    """Store ``data`` as a blob whatever its size, now; returns its hash."""
    digest = hashlib.sha256(data).hexdigest()
    conn.execute(_INSERT_BLOB, (digest, data, len(data), now))
    return digest


def put_blobs(conn: Conn, datas: list[bytes], now: float, digests: list[str] | None = None) -> list[str]:
    """Store each of ``datas`` as a blob, in a few multi-row statements; returns their hashes.

    ``digests``: each one's SHA-256 (hex), where the caller has computed it already."""
    if digests is None:
        digests = [hashlib.sha256(data).hexdigest() for data in datas]
    rows = [(digest, data, len(data), now) for digest, data in zip(digests, datas, strict=True)]
    conn.insert_rows("blobs", ("hash", "data", "size", "created_at"), rows, unique="hash")
    return digests


def delete_blob(conn: Conn, digest: str) -> int:
    return int(conn.execute("DELETE FROM blobs WHERE hash = ?", (digest,)).rowcount)


def drop_unreferenced(conn: Conn, references: list[tuple[str, str]]) -> tuple[int, int]:
    """Delete the blobs no ``(table, column)`` of ``references`` points at; returns (count, bytes)."""
    refs = " UNION ".join(f'SELECT "{c}" FROM "{t}" WHERE "{c}" IS NOT NULL' for t, c in references)
    orphan = "SELECT hash FROM blobs" + (f" WHERE hash NOT IN ({refs})" if refs else "")
    size = conn.scalar(f"SELECT COALESCE(SUM(size), 0) FROM blobs WHERE hash IN ({orphan})")
    count = conn.execute(f"DELETE FROM blobs WHERE hash IN ({orphan})").rowcount
    return int(count), int(size or 0)


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


class Unreadable(dict[str, str]):
    """Stands in for a stored payload the reader refuses (written before :data:`MAX_DEPTH` was enforced).

    It shows as ``{"unreadable": reason}`` wherever the payload is displayed, and the engine refuses to
    hand it to workflow code as if it were the value.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(unreadable=reason)


def load_or_unreadable(conn: Conn, inline: str | None, blob: str | None) -> Any:
    """:func:`load`, but an :class:`Unreadable` instead of an error for a payload that cannot be read,
    so one bad row never hides the run or step it belongs to."""
    try:
        return load(conn, inline, blob)
    except ValueError as e:
        return Unreadable(f"the stored JSON cannot be read ({e}); it is kept as it was")
