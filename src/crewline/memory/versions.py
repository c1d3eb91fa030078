"""Memory items and documents with their history: the only module that issues SQL on ``memory_items``,
``memory_documents``, ``memory_versions`` and ``memory_changes`` (one closely-knit group: every write to
an item is a version and a change-feed entry in the same transaction). Other memory modules call these
functions; snapshots are :mod:`crewline.memory.rollback`'s, the conversation window
:mod:`crewline.memory.window`'s, the embedding index record :mod:`crewline.memory.store`'s.

Versioned writes: every change to an item or document is a row in ``memory_versions``.

A version row holds the entity's whole state after the write as JSON (``None`` once deleted) and who
wrote it (the operator, or a run and step). Rollback is replay: for every entity of a scope touched after
the target point, restore the state it had then, as a new version, so a rollback can itself be undone.
Writers here take a :class:`~crewline.store.database.Conn` inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from ..store.database import Conn
from ..store.fulltext import TextTable
from ..store.payloads import load_json

__all__ = [
    "NewItems",
    "add_items",
    "content_hash",
    "delete_document",
    "delete_item",
    "embed_text",
    "item_state",
    "latest_seq",
    "log_version",
    "new_items",
    "put_document",
    "put_documents",
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
_VERSION_COLUMNS = ("entity", "entity_id", "scope", "version", "op", "state", "author", "at")
# What full-text search indexes (see crewline.store.fulltext); the memory migrations create it.
ITEMS_TEXT = TextTable(table="memory_items", rowid="rid", columns=("text", "heading"), index="memory_fts")


def content_hash(text: str, heading: str | None = None) -> str:
    """Hash of the text as a duplicate detector sees it: case and spacing do not matter."""
    # str.split() splits on exactly the characters a str regex \s matches: the same text, faster.
    norm = " ".join(f"{heading or ''}\n{text}".split()).casefold()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def embed_text(state: dict[str, Any]) -> str:
    """What gets embedded for an item: its heading path gives a chunk its context."""
    heading = state.get("heading")
    return f"{heading}\n{state['text']}" if heading else str(state["text"])


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _dumps(value: Any) -> str:
    """Metadata as stored on the row: keys sorted, so equal metadata is equal text."""
    return _ENCODER.encode(value)


def _state_json(state: dict[str, Any]) -> str:
    """A version's state: read back as a whole, never compared as text, so the fast encoder (a
    fifth of the standard one's time for a chunk, which an ingest writes one of per chunk)."""
    return pydantic_core.to_json(state).decode()


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
        f"INSERT INTO memory_versions ({', '.join(_VERSION_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (entity, entity_id, scope, version, op, None if state is None else _state_json(state), author, at),
    )


def log_state(conn: Conn, entity: str, state: dict[str, Any], op: str, at: float) -> None:
    """Record ``state`` (which carries its id, scope, version and author) as a version of ``entity``."""
    log_version(
        conn,
        entity,
        state,
        entity_id=state["id"],
        scope=state["scope"],
        version=state["version"],
        op=op,
        author=state["author"],
        at=at,
    )


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
        conn.dialect.fulltext.rows_added(conn, ITEMS_TEXT, [int(rid)])
    else:
        sets = ", ".join(f"{f} = ?" for f in ITEM_FIELDS[1:])
        conn.execute(
            f"UPDATE memory_items SET {sets}, embedding = ?, embed_model = ? WHERE rid = ?",
            (*values[1:], embedding, embed_model, rid),
        )
    log_state(conn, "item", state, op, at)
    log_change(conn, int(rid), at)
    return int(rid)


@dataclass(frozen=True)
class NewItems:
    """Rows of items not stored yet (ids not in use) and of their first versions, built by
    :func:`new_items` before the transaction, so that the writer only inserts them."""

    items: list[tuple[Any, ...]] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)  # each without its ``at``


def new_items(
    items: Iterable[tuple[dict[str, Any], bytes]], *, embed_model: str, op: str = "add"
) -> NewItems:
    """The rows :func:`add_items` writes for ``items`` (state, embedding) with ``op`` as their version.

    One pass, so a state built lazily by the caller is dropped as soon as its rows are made: the rows
    are tuples of plain values, which the cyclic garbage collector stops tracking, where a batch's
    thousands of state dicts held at once used to be promoted to its oldest generation and rescanned."""
    meta_at = ITEM_FIELDS.index("metadata")
    # A document's chunks share one metadata dict: encoded once (the dict is kept beside its text, so
    # its id cannot be reused by another while this runs).
    metas: dict[int, tuple[Any, str]] = {}
    out = NewItems()
    for state, blob in items:
        values = [state[f] for f in ITEM_FIELDS]
        meta = state["metadata"]
        if id(meta) not in metas:
            metas[id(meta)] = meta, _dumps(meta)
        values[meta_at] = metas[id(meta)][1]
        out.items.append((*values, blob, embed_model))
        out.versions.append(
            ("item", state["id"], state["scope"], state["version"], op, _state_json(state), state["author"])
        )
    return out


def add_items(conn: Conn, batches: Sequence[NewItems], *, at: float) -> None:
    """Insert the rows of ``batches`` with their versions at ``at``: a few multi-row statements for all."""
    items = [row for b in batches for row in b.items]
    if not items:
        return
    rids = conn.insert_rows("memory_items", (*ITEM_FIELDS, "embedding", "embed_model"), items, "rid")
    conn.dialect.fulltext.rows_added(conn, ITEMS_TEXT, rids)
    conn.insert_rows("memory_versions", _VERSION_COLUMNS, [(*row, at) for b in batches for row in b.versions])
    conn.insert_rows("memory_changes", ("rid", "at"), [(rid, at) for rid in rids])


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


def put_documents(conn: Conn, states: list[tuple[dict[str, Any], str]], *, at: float) -> None:
    """Insert or replace many documents (state, op) with their versions: a few statements for all."""
    for part, marks in _in_parts([s["id"] for s, _ in states]):
        conn.execute(f"DELETE FROM memory_documents WHERE id IN ({marks})", part)
    rows = []
    for state, _ in states:
        values = [state[f] for f in DOC_FIELDS]
        values[DOC_FIELDS.index("metadata")] = _dumps(state["metadata"])
        rows.append(values)
    conn.insert_rows("memory_documents", DOC_FIELDS, rows)
    conn.insert_rows(
        "memory_versions",
        _VERSION_COLUMNS,
        [
            ("document", s["id"], s["scope"], s["version"], op, _state_json(s), s["author"], at)
            for s, op in states
        ],
    )


def put_document(conn: Conn, state: dict[str, Any], *, op: str, at: float) -> None:
    put_documents(conn, [(state, op)], at=at)


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


# -- reads for the store, ingest, retrieval, the vector index and rollback --------------------------------


def item_kind(conn: Conn, rid: int) -> tuple[str, str] | None:
    """(id, kind) of the item at ``rid``."""
    row = conn.one("SELECT id, kind FROM memory_items WHERE rid = ?", (rid,))
    return None if row is None else (str(row[0]), str(row[1]))


def find_exact(conn: Conn, scope: str, chash: str, kind: str) -> str | None:
    """The item of ``scope`` and ``kind`` (never a chunk) whose content hash is ``chash``."""
    # The literal "kind <> 'chunk'" lets the planner use the partial index memory_items_hash.
    found = conn.scalar(
        "SELECT id FROM memory_items WHERE scope = ? AND content_hash = ? AND kind = ? AND kind <> 'chunk'",
        (scope, chash, kind),
    )
    return None if found is None else str(found)


def embedding_of(conn: Conn, item_id: str) -> bytes | None:
    emb = conn.scalar("SELECT embedding FROM memory_items WHERE id = ?", (item_id,))
    return None if emb is None else bytes(emb)


def list_items(conn: Conn, scope: str, kind: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(ITEM_FIELDS)} FROM memory_items WHERE scope = ?"
    params: list[Any] = [scope]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    sql += " ORDER BY rid LIMIT ? OFFSET ?"
    return [item_state(r) for r in conn.all(sql, (*params, limit, offset))]


def document_chunks(conn: Conn, doc_id: str) -> list[dict[str, Any]]:
    """The chunks of a document, in order."""
    rows = conn.all(
        f"SELECT {', '.join(ITEM_FIELDS)} FROM memory_items WHERE document_id = ? ORDER BY position",
        (doc_id,),
    )
    return [item_state(r) for r in rows]


def chunk_ids(conn: Conn, doc_id: str) -> list[str]:
    return [str(r[0]) for r in conn.all("SELECT id FROM memory_items WHERE document_id = ?", (doc_id,))]


def expired_ids(conn: Conn, at: float) -> list[str]:
    return [str(r[0]) for r in conn.all("SELECT id FROM memory_items WHERE expires_at <= ?", (at,))]


def count_items(conn: Conn) -> int:
    return int(conn.scalar("SELECT COUNT(*) FROM memory_items") or 0)


def unembedded(conn: Conn, model: str, limit: int) -> list[tuple[Any, ...]]:
    """(rid, text, heading) of items not embedded by ``model``, by rid."""
    return conn.all(
        "SELECT rid, text, heading FROM memory_items WHERE embed_model IS NULL OR embed_model != ? "
        "ORDER BY rid LIMIT ?",
        (model, limit),
    )


def set_embedding(conn: Conn, rid: int, embedding: bytes, model: str, at: float) -> None:
    conn.execute(
        "UPDATE memory_items SET embedding = ?, embed_model = ? WHERE rid = ?", (embedding, model, rid)
    )
    log_change(conn, rid, at)


def hit_rows(conn: Conn, rids: list[int]) -> list[tuple[Any, ...]]:
    """Items with their document's source: rid, id, scope, kind, text, metadata, version, document_id,
    source, position, heading, char_start, char_end."""
    return conn.all(
        "SELECT i.rid, i.id, i.scope, i.kind, i.text, i.metadata, i.version, i.document_id, d.source, "
        "i.position, i.heading, i.char_start, i.char_end FROM memory_items i "
        f"LEFT JOIN memory_documents d ON d.id = i.document_id WHERE i.rid IN ({','.join('?' * len(rids))})",
        rids,
    )


def embeddings(conn: Conn, rids: list[int] | None = None) -> Any:
    """A cursor over (rid, scope, expires_at, embedding): of ``rids``, or of every embedded item."""
    if rids is None:
        return conn.execute(
            "SELECT rid, scope, expires_at, embedding FROM memory_items WHERE embedding IS NOT NULL"
        )
    marks = ",".join("?" * len(rids))
    return conn.execute(
        f"SELECT rid, scope, expires_at, embedding FROM memory_items WHERE rid IN ({marks})", rids
    )


def embedded_of_width(width: int) -> str:
    """A SELECT of (rid, scope, expires_at, embedding) for every item embedded with ``width`` floats,
    for a derived index to fill itself from in one statement (:mod:`crewline.memory.ann`)."""
    return (
        "SELECT rid, scope, expires_at, embedding FROM memory_items "
        f"WHERE embedding IS NOT NULL AND length(embedding) = {4 * int(width)}"
    )


def live_rids(conn: Conn, rids: Sequence[int], scopes: Sequence[str], now: float) -> set[int]:
    """Those of ``rids`` that are items of ``scopes`` not expired at ``now``."""
    marks, smarks = ",".join("?" * len(rids)), ",".join("?" * len(scopes))
    rows = conn.all(
        f"SELECT rid FROM memory_items WHERE rid IN ({marks}) AND scope IN ({smarks}) "
        "AND (expires_at IS NULL OR expires_at > ?)",
        (*rids, *scopes, now),
    )
    return {int(r[0]) for r in rows}


def changes_since(conn: Conn, seq: int) -> list[tuple[Any, ...]]:
    """(seq, rid) of the change feed after ``seq``."""
    return conn.all("SELECT seq, rid FROM memory_changes WHERE seq > ? ORDER BY seq", (seq,))


def sample_texts(conn: Conn, n: int) -> list[str]:
    """About ``n`` item texts spread evenly over the table (every k-th rowid)."""
    top = int(conn.scalar("SELECT MAX(rid) FROM memory_items") or 0)
    step = max(1, top // n)  # integer division in both dialects; psycopg reads % as a placeholder
    rows = conn.all("SELECT text FROM memory_items WHERE (rid / ?) * ? = rid LIMIT ?", (step, step, n))
    return [str(r[0]) for r in rows]


def last_change(conn: Conn) -> int:
    return int(conn.scalar("SELECT MAX(seq) FROM memory_changes") or 0)


def prune_changes(conn: Conn, before: float) -> None:
    conn.execute("DELETE FROM memory_changes WHERE at < ?", (before,))


def document_id(conn: Conn, scope: str, source: str) -> str | None:
    found = conn.scalar("SELECT id FROM memory_documents WHERE scope = ? AND source = ?", (scope, source))
    return None if found is None else str(found)


def document_versions(conn: Conn, scope: str, sources: Sequence[str]) -> dict[str, int]:
    """The stored version of each of ``sources`` in ``scope`` that has a document."""
    out: dict[str, int] = {}
    for part, marks in _in_parts(sources):
        sql = f"SELECT source, version FROM memory_documents WHERE scope = ? AND source IN ({marks})"
        out.update((str(source), int(version)) for source, version in conn.all(sql, (scope, *part)))
    return out


def _in_parts(values: Sequence[Any], size: int = 500) -> Iterator[tuple[list[Any], str]]:
    """``values`` in parts of at most ``size``, each with its ``?, ?, ...`` for an ``IN`` list."""
    for first in range(0, len(values), size):
        part = list(values[first : first + size])
        yield part, ", ".join("?" * len(part))


def list_documents(conn: Conn, scope: str) -> list[dict[str, Any]]:
    rows = conn.all(
        f"SELECT {', '.join(DOC_FIELDS)} FROM memory_documents WHERE scope = ? ORDER BY source", (scope,)
    )
    return [dict(zip(DOC_FIELDS, r, strict=True)) for r in rows]


def current_version(conn: Conn, entity: str, entity_id: str) -> int | None:
    """The live version of an item or document (``None`` if absent)."""
    table = "memory_items" if entity == "item" else "memory_documents"
    found = conn.scalar(f"SELECT version FROM {table} WHERE id = ?", (entity_id,))
    return None if found is None else int(found)


def last_version(conn: Conn, entity_id: str) -> int:
    return int(conn.scalar("SELECT MAX(version) FROM memory_versions WHERE entity_id = ?", (entity_id,)) or 0)


def seq_at(conn: Conn, at: float) -> int:
    """The last version sequence written at or before ``at``."""
    return int(conn.scalar("SELECT MAX(id) FROM memory_versions WHERE at <= ?", (at,)) or 0)


def touched_since(conn: Conn, scope: str, seq: int) -> list[tuple[Any, ...]]:
    """(entity, entity_id) of everything in ``scope`` written after ``seq``."""
    return conn.all(
        "SELECT entity, entity_id FROM memory_versions WHERE scope = ? AND id > ? GROUP BY entity, entity_id",
        (scope, seq),
    )


def history(conn: Conn, entity_id: str) -> list[tuple[Any, ...]]:
    return conn.all(
        "SELECT id, entity, entity_id, scope, version, op, state, author, at FROM memory_versions "
        "WHERE entity_id = ? ORDER BY id",
        (entity_id,),
    )


def scope_history(conn: Conn, scope: str, limit: int) -> list[tuple[Any, ...]]:
    """Newest first, without the states."""
    return conn.all(
        "SELECT id, entity, entity_id, scope, version, op, NULL, author, at FROM memory_versions "
        "WHERE scope = ? ORDER BY id DESC LIMIT ?",
        (scope, limit),
    )


def counts(conn: Conn) -> dict[str, Any]:
    """Totals for statistics: items, chunks, documents, versions, and items per scope."""

    def count(sql: str) -> int:
        return int(conn.scalar(sql) or 0)

    return {
        "items": count("SELECT COUNT(*) FROM memory_items"),
        "chunks": count("SELECT COUNT(*) FROM memory_items WHERE kind = 'chunk'"),
        "documents": count("SELECT COUNT(*) FROM memory_documents"),
        "versions": count("SELECT COUNT(*) FROM memory_versions"),
        "scopes": {
            s: int(n)
            for s, n in conn.all("SELECT scope, COUNT(*) FROM memory_items GROUP BY scope ORDER BY scope")
        },
    }


def scope_counts(conn: Conn) -> list[tuple[str, int, int, float | None]]:
    """(scope, items, documents, last write) of every scope with items, documents or history, by name."""
    items = {s: int(n) for s, n in conn.all("SELECT scope, COUNT(*) FROM memory_items GROUP BY scope")}
    docs = {s: int(n) for s, n in conn.all("SELECT scope, COUNT(*) FROM memory_documents GROUP BY scope")}
    last = {s: at for s, at in conn.all("SELECT scope, MAX(at) FROM memory_versions GROUP BY scope")}
    return [
        (s, items.get(s, 0), docs.get(s, 0), None if last.get(s) is None else float(last[s]))
        for s in sorted({*items, *docs, *last})
    ]


def document_blobs(conn: Conn, scope: str) -> set[str]:
    """Blob hashes of the texts of ``scope``'s documents, live or in their history."""
    hashes = {
        r[0] for r in conn.all("SELECT text_blob FROM memory_documents WHERE scope = ?", (scope,)) if r[0]
    }
    for (state,) in conn.all(
        "SELECT state FROM memory_versions WHERE scope = ? AND entity = 'document' AND state IS NOT NULL",
        (scope,),
    ):
        blob = load_json(state).get("text_blob")
        if blob:
            hashes.add(blob)
    return hashes


def blob_in_use(conn: Conn, blob: str) -> bool:
    """Whether a document, live or in history, still holds the text stored as ``blob``."""
    return bool(
        conn.one("SELECT 1 FROM memory_documents WHERE text_blob = ?", (blob,))
        or conn.one(
            "SELECT 1 FROM memory_versions WHERE entity = 'document' AND state LIKE ?",
            (f'%"text_blob":"{blob}"%',),
        )
    )


def forget_scope(conn: Conn, scope: str, now: float) -> dict[str, int]:
    """Delete every item, document and version of ``scope`` (the vector index is told); the counts."""
    conn.execute(
        "INSERT INTO memory_changes (rid, at) SELECT rid, ? FROM memory_items WHERE scope = ?", (now, scope)
    )
    return {
        "items": conn.execute("DELETE FROM memory_items WHERE scope = ?", (scope,)).rowcount,
        "documents": conn.execute("DELETE FROM memory_documents WHERE scope = ?", (scope,)).rowcount,
        "versions": conn.execute("DELETE FROM memory_versions WHERE scope = ?", (scope,)).rowcount,
    }
