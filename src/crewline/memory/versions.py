"""Versioned writes: every change to an item or document is a row in ``memory_versions``.

A version row holds the entity's whole state after the write as JSON (``None`` once deleted) and who
wrote it (the operator, or a run and step). Rollback is replay: for every entity of a scope touched after
the target point, restore the state it had then, as a new version, so a rollback can itself be undone.
Writers here take a :class:`~crewline.store.database.Conn` inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..store.database import Conn
from ..store.payloads import load_json

__all__ = [
    "add_items",
    "content_hash",
    "delete_document",
    "delete_item",
    "embed_text",
    "item_state",
    "latest_seq",
    "log_version",
    "put_document",
    "put_item",
    "state_at",
]

ITEM_FIELDS = (
    "id",
    "scope",
    "kind",
    "document_id",
    "position",
    "heading",
    "char_start",
    "char_end",
    "text",
    "content_hash",
    "metadata",
    "expires_at",
    "version",
    "author",
    "created_at",
    "updated_at",
)
DOC_FIELDS = (
    "id",
    "scope",
    "source",
    "mime",
    "title",
    "content_hash",
    "text_blob",
    "size",
    "chunks",
    "metadata",
    "version",
    "author",
    "created_at",
    "updated_at",
)
_SPACE = re.compile(r"\s+")


def content_hash(text: str, heading: str | None = None) -> str:
    """Hash of the text as a duplicate detector sees it: case and spacing do not matter."""
    norm = _SPACE.sub(" ", f"{heading or ''}\n{text}").strip().casefold()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def embed_text(state: dict[str, Any]) -> str:
    """What gets embedded for an item: its heading path gives a chunk its context."""
    heading = state.get("heading")
    return f"{heading}\n{state['text']}" if heading else str(state["text"])


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def item_state(row: tuple[Any, ...]) -> dict[str, Any]:
    state = dict(zip(ITEM_FIELDS, row, strict=True))
    state["metadata"] = load_json(state["metadata"]) if state["metadata"] else {}
    return state


def get_item_state(conn: Conn, item_id: str) -> dict[str, Any] | None:
    row = conn.one(f"SELECT {', '.join(ITEM_FIELDS)} FROM memory_items WHERE id = ?", (item_id,))
    return None if row is None else item_state(row)


def get_document_state(conn: Conn, doc_id: str) -> dict[str, Any] | None:
    row = conn.one(f"SELECT {', '.join(DOC_FIELDS)} FROM memory_documents WHERE id = ?", (doc_id,))
    if row is None:
        return None
    state = dict(zip(DOC_FIELDS, row, strict=True))
    state["metadata"] = load_json(state["metadata"]) if state["metadata"] else {}
    return state


def log_version(
    conn: Conn,
    entity: str,
    state: dict[str, Any] | None,
    *,
    entity_id: str,
    scope: str,
    version: int,
    op: str,
    author: str,
    at: float,
) -> None:
    conn.execute(
        "INSERT INTO memory_versions (entity, entity_id, scope, version, op, state, author, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (entity, entity_id, scope, version, op, None if state is None else _dumps(state), author, at),
    )


def log_state(conn: Conn, entity: str, state: dict[str, Any], op: str, at: float) -> None:
    """Record ``state`` (which carries its id, scope, version and author) as a version of ``entity``."""
    log_version(conn, entity, state, entity_id=state["id"], scope=state["scope"], version=state["version"],
                op=op, author=state["author"], at=at)  # fmt: skip


def log_change(conn: Conn, rid: int, at: float) -> None:
    conn.execute("INSERT INTO memory_changes (rid, at) VALUES (?, ?)", (rid, at))


def put_item(
    conn: Conn, state: dict[str, Any], *, embedding: bytes | None, embed_model: str | None, op: str, at: float
) -> int:
    """Insert or replace the item ``state['id']`` with ``state`` (version already set); returns its rid."""
    values = [state[f] for f in ITEM_FIELDS]
    values[ITEM_FIELDS.index("metadata")] = _dumps(state["metadata"])
    rid = conn.scalar("SELECT rid FROM memory_items WHERE id = ?", (state["id"],))
    if rid is None:
        cols = ", ".join((*ITEM_FIELDS, "embedding", "embed_model"))
        marks = ", ".join("?" * (len(ITEM_FIELDS) + 2))
        rid = conn.scalar(
            f"INSERT INTO memory_items ({cols}) VALUES ({marks}) RETURNING rid",
            (*values, embedding, embed_model),
        )
    else:
        sets = ", ".join(f"{f} = ?" for f in ITEM_FIELDS[1:])
        conn.execute(
            f"UPDATE memory_items SET {sets}, embedding = ?, embed_model = ? WHERE rid = ?",
            (*values[1:], embedding, embed_model, rid),
        )
    log_state(conn, "item", state, op, at)
    log_change(conn, int(rid), at)
    return int(rid)


def add_items(
    conn: Conn, items: list[tuple[dict[str, Any], bytes]], *, embed_model: str, at: float, op: str = "add"
) -> None:
    """Insert many new items (ids not in use) with their first versions: a few batched statements."""
    if not items:
        return
    cols = ", ".join((*ITEM_FIELDS, "embedding", "embed_model"))
    marks = ", ".join("?" * (len(ITEM_FIELDS) + 2))
    meta_at = ITEM_FIELDS.index("metadata")
    rows = []
    for state, blob in items:
        values = [state[f] for f in ITEM_FIELDS]
        values[meta_at] = _dumps(state["metadata"])
        rows.append((*values, blob, embed_model))
    _many(conn, f"INSERT INTO memory_items ({cols}) VALUES ({marks})", rows)
    _many(
        conn,
        "INSERT INTO memory_versions (entity, entity_id, scope, version, op, state, author, at) "
        "VALUES ('item', ?, ?, ?, ?, ?, ?, ?)",
        [(s["id"], s["scope"], s["version"], op, _dumps(s), s["author"], at) for s, _ in items],
    )
    ids = [s["id"] for s, _ in items]
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        conn.execute(
            f"INSERT INTO memory_changes (rid, at) SELECT rid, ? FROM memory_items WHERE id IN ({','.join('?' * len(part))})",
            (at, *part),
        )


def _many(conn: Conn, sql: str, rows: list[tuple[Any, ...]]) -> None:
    # The store's Conn has no executemany; the raw driver's batches the round trips (psycopg pipelines).
    cur = conn.raw.cursor()
    try:
        cur.executemany(conn.dialect.sql(sql), rows)
    finally:
        cur.close()


def delete_item(conn: Conn, item_id: str, *, author: str, op: str, at: float) -> bool:
    row = conn.one("SELECT rid, scope, version FROM memory_items WHERE id = ?", (item_id,))
    if row is None:
        return False
    rid, scope, version = row
    conn.execute("DELETE FROM memory_items WHERE rid = ?", (rid,))
    log_version(
        conn,
        "item",
        None,
        entity_id=item_id,
        scope=scope,
        version=int(version) + 1,
        op=op,
        author=author,
        at=at,
    )
    log_change(conn, int(rid), at)
    return True


def put_document(conn: Conn, state: dict[str, Any], *, op: str, at: float) -> None:
    values = [state[f] for f in DOC_FIELDS]
    values[DOC_FIELDS.index("metadata")] = _dumps(state["metadata"])
    conn.execute("DELETE FROM memory_documents WHERE id = ?", (state["id"],))
    conn.execute(
        f"INSERT INTO memory_documents ({', '.join(DOC_FIELDS)}) VALUES ({', '.join('?' * len(DOC_FIELDS))})",
        values,
    )
    log_state(conn, "document", state, op, at)


def delete_document(conn: Conn, doc_id: str, *, author: str, op: str, at: float) -> bool:
    row = conn.one("SELECT scope, version FROM memory_documents WHERE id = ?", (doc_id,))
    if row is None:
        return False
    conn.execute("DELETE FROM memory_documents WHERE id = ?", (doc_id,))
    log_version(
        conn,
        "document",
        None,
        entity_id=doc_id,
        scope=row[0],
        version=int(row[1]) + 1,
        op=op,
        author=author,
        at=at,
    )
    return True


def latest_seq(conn: Conn, scope: str | None = None) -> int:
    if scope is None:
        return int(conn.scalar("SELECT MAX(id) FROM memory_versions") or 0)
    return int(conn.scalar("SELECT MAX(id) FROM memory_versions WHERE scope = ?", (scope,)) or 0)


def state_at(conn: Conn, entity_id: str, seq: int) -> dict[str, Any] | None:
    """The entity's state as of version sequence ``seq`` (``None``: absent then)."""
    row = conn.one(
        "SELECT state FROM memory_versions WHERE entity_id = ? AND id <= ? ORDER BY id DESC LIMIT 1",
        (entity_id, seq),
    )
    if row is None or row[0] is None:
        return None
    state: dict[str, Any] = load_json(row[0])
    return state
