"""Rolling a scope back to an earlier point, and forgetting a scope entirely."""

from __future__ import annotations

import functools
import time
from datetime import datetime
from typing import Any

from ..errors import InvalidInput
from ..store.database import Conn
from ..store.payloads import load_json
from . import versions as v
from .records import RollbackReport
from .vectors import to_blob
from .writing import ScopeChanged, Writable

__all__ = ["forget", "rollback"]

_Plan = list[tuple[str, str, dict[str, Any] | None]]  # (entity, id, state wanted)


async def rollback(store: Writable, scope: str, to: str | float | datetime, author: str) -> RollbackReport:
    for _ in range(5):
        seq, head, plan = await store.db.read(lambda c: _plan(c, scope, to))
        wanted = [s for e, _, s in plan if e == "item" and s is not None]
        texts = [v.embed_text(s) for s in wanted]
        vecs = await store.embed(texts) if texts else None
        blobs = {s["id"]: to_blob(vecs[i]) for i, s in enumerate(wanted)} if vecs is not None else {}
        try:
            restored, removed = await store.db.write(
                functools.partial(
                    _apply,
                    scope=scope,
                    head=head,
                    plan=plan,
                    blobs=blobs,
                    model=store.embedder.name,
                    author=author,
                )
            )
        except ScopeChanged:
            continue
        return RollbackReport(scope, seq, restored, removed)
    raise InvalidInput(f"scope {scope!r} kept changing during the rollback; try again")


def _target_seq(conn: Conn, scope: str, to: str | float | datetime) -> int:
    if isinstance(to, datetime):
        to = to.timestamp()
    if isinstance(to, str):
        row = conn.one(
            "SELECT seq FROM memory_snapshots WHERE scope = ? AND (id = ? OR label = ?) "
            "ORDER BY created_at DESC",
            (scope, to, to),
        )
        if row is not None:
            return int(row[0])
        try:
            to = datetime.fromisoformat(to).timestamp()
        except ValueError:
            raise InvalidInput(
                f"to: no snapshot {to!r} in scope {scope!r}, and it is not an ISO time either"
            ) from None
    if isinstance(to, bool) or not isinstance(to, int | float):
        raise InvalidInput(f"to must be a snapshot id or label, a datetime or a Unix time, got {to!r}")
    if to > time.time() + 1:
        raise InvalidInput("to: cannot roll back to a time in the future")
    return int(conn.scalar("SELECT MAX(id) FROM memory_versions WHERE at <= ?", (float(to),)) or 0)


def _plan(conn: Conn, scope: str, to: str | float | datetime) -> tuple[int, int, _Plan]:
    seq = _target_seq(conn, scope, to)
    head = v.latest_seq(conn, scope)
    touched = conn.all(
        "SELECT entity, entity_id FROM memory_versions WHERE scope = ? AND id > ? GROUP BY entity, entity_id",
        (scope, seq),
    )
    plan: _Plan = []
    for entity, entity_id in touched:
        want = v.state_at(conn, entity_id, seq)
        now = v.get_item_state(conn, entity_id) if entity == "item" else v.get_document_state(conn, entity_id)
        if not _same(want, now):
            plan.append((entity, entity_id, want))
    return seq, head, plan


def _same(want: dict[str, Any] | None, now: dict[str, Any] | None) -> bool:
    if want is None or now is None:
        return want is now
    skip = ("version", "author", "updated_at")
    return all(want.get(k) == now.get(k) for k in want if k not in skip)


def _apply(
    conn: Conn, *, scope: str, head: int, plan: _Plan, blobs: dict[str, bytes], model: str, author: str
) -> tuple[int, int]:
    conn.lock_key(f"memory:{scope}")
    if v.latest_seq(conn, scope) != head:
        raise ScopeChanged(scope)
    now = time.time()
    restored = removed = 0
    for entity, entity_id, want in plan:
        current = conn.scalar(
            "SELECT version FROM memory_items WHERE id = ?"
            if entity == "item"
            else "SELECT version FROM memory_documents WHERE id = ?",
            (entity_id,),
        )
        last = int(current) if current is not None else _last_version(conn, entity_id)
        if want is None:
            if entity == "item":
                removed += v.delete_item(conn, entity_id, author=author, op="rollback", at=now)
            else:
                v.delete_document(conn, entity_id, author=author, op="rollback", at=now)
            continue
        state = {**want, "version": last + 1, "author": author, "updated_at": now}
        if entity == "item":
            v.put_item(conn, state, embedding=blobs[entity_id], embed_model=model, op="rollback", at=now)
            restored += 1
        else:
            v.put_document(conn, state, op="rollback", at=now)
    return restored, removed


def _last_version(conn: Conn, entity_id: str) -> int:
    return int(conn.scalar("SELECT MAX(version) FROM memory_versions WHERE entity_id = ?", (entity_id,)) or 0)


def forget(conn: Conn, scope: str, now: float) -> dict[str, int]:
    """Everything of ``scope`` goes, including history and document blobs no other scope still uses."""
    conn.lock_key(f"memory:{scope}")
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
    conn.execute(
        "INSERT INTO memory_changes (rid, at) SELECT rid, ? FROM memory_items WHERE scope = ?", (now, scope)
    )
    counts = {
        "items": conn.execute("DELETE FROM memory_items WHERE scope = ?", (scope,)).rowcount,
        "documents": conn.execute("DELETE FROM memory_documents WHERE scope = ?", (scope,)).rowcount,
        "versions": conn.execute("DELETE FROM memory_versions WHERE scope = ?", (scope,)).rowcount,
        "snapshots": conn.execute("DELETE FROM memory_snapshots WHERE scope = ?", (scope,)).rowcount,
        "messages": conn.execute("DELETE FROM memory_messages WHERE scope = ?", (scope,)).rowcount,
    }
    blobs = 0
    for h in sorted(hashes):
        in_use = conn.one("SELECT 1 FROM memory_documents WHERE text_blob = ?", (h,)) or conn.one(
            "SELECT 1 FROM memory_versions WHERE entity = 'document' AND state LIKE ?",
            (f'%"text_blob":"{h}"%',),
        )
        if not in_use:
            blobs += conn.execute("DELETE FROM blobs WHERE hash = ?", (h,)).rowcount
    counts["blobs"] = blobs
    return counts
