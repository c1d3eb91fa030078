"""Rolling a scope back to an earlier point, and forgetting a scope entirely.

This module owns ``memory_snapshots`` (named points to roll back to): it alone issues their SQL.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime
from typing import Any

from ..errors import InvalidInput
from ..store.database import Conn
from ..store.payloads import delete_blob
from . import versions as v
from .results import RollbackReport, Snapshot
from .vectors import to_blob
from .window import forget_messages
from .writing import ScopeChanged, Writable

__all__ = ["count_snapshots", "forget", "list_snapshots", "rollback", "take_snapshot"]

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
            "SELECT seq FROM memory_snapshots WHERE scope = ? AND (id = ? OR label = ?) ORDER BY created_at DESC",
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
    return v.seq_at(conn, float(to))


def _plan(conn: Conn, scope: str, to: str | float | datetime) -> tuple[int, int, _Plan]:
    seq = _target_seq(conn, scope, to)
    head = v.latest_seq(conn, scope)
    touched = v.touched_since(conn, scope, seq)
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
        current = v.current_version(conn, entity, entity_id)
        last = current if current is not None else v.last_version(conn, entity_id)
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


def take_snapshot(conn: Conn, snap_id: str, scope: str, label: str | None, author: str) -> Snapshot:
    snap = Snapshot(snap_id, scope, v.latest_seq(conn), label, author, time.time())
    conn.execute(
        "INSERT INTO memory_snapshots (id, scope, seq, label, author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (snap.id, snap.scope, snap.seq, snap.label, snap.author, snap.created_at),
    )
    return snap


def list_snapshots(conn: Conn, scope: str) -> list[Snapshot]:
    rows = conn.all(
        "SELECT id, scope, seq, label, author, created_at FROM memory_snapshots WHERE scope = ? "
        "ORDER BY created_at",
        (scope,),
    )
    return [Snapshot(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]


def count_snapshots(conn: Conn) -> int:
    return int(conn.scalar("SELECT COUNT(*) FROM memory_snapshots") or 0)


def forget(conn: Conn, scope: str, now: float) -> dict[str, int]:
    """Everything of ``scope`` goes, including history and document blobs no other scope still uses."""
    conn.lock_key(f"memory:{scope}")
    hashes = v.document_blobs(conn, scope)
    counts = v.forget_scope(conn, scope, now)
    counts["snapshots"] = conn.execute("DELETE FROM memory_snapshots WHERE scope = ?", (scope,)).rowcount
    counts["messages"] = forget_messages(conn, scope)
    counts["blobs"] = sum(delete_blob(conn, h) for h in sorted(hashes) if not v.blob_in_use(conn, h))
    return counts
