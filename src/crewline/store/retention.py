"""Retention: drop the payloads of finished runs past an age, then the blobs nothing references.

Which rows hold a run's payloads is each component's to say: a component's ``migrations`` module (the
ones :data:`crewline.store.migrations.COMPONENTS` names) lists them in ``PAYLOAD_TABLES`` as
:class:`PayloadTable`, beside the schema that created them. The table of runs itself is registered with
``finished``, the condition that makes one of its rows a finished run past the cutoff; rows of the other
tables tied to such a run go. A pruned run keeps its row (status, error, timings) and records when it was
pruned (its ``pruned_at`` column), so whoever looks at it later is told its payloads are gone rather than
shown an empty run, unless runs are deleted too. A dry run does the same work in a transaction it rolls
back, so what it reports is exactly what a real run would remove at that moment.

Any column that points at a blob is named ``<something>_blob`` (a convention every room follows), so the
blob sweep finds references by looking at the schema instead of keeping a list that can fall out of date.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .database import Conn, Database
from .migrations import COMPONENTS
from .payloads import drop_unreferenced

__all__ = ["PayloadTable", "PruneReport", "payload_tables", "prune"]


@dataclass(frozen=True)
class PayloadTable:
    """Rows carrying payloads of runs: ``run_column`` ties a row to its run; ``columns`` are its payloads.

    Only for the table of runs (``run_column`` being its key): ``finished``, the SQL condition, with one
    ``?`` for the cutoff time, under which a run is finished and old enough to prune, and ``pruned_at``,
    the column that records when its payloads went (a stamped row is not pruned again).
    """

    table: str
    columns: tuple[str, ...]
    run_column: str
    finished: str | None = None
    pruned_at: str | None = None


@dataclass(frozen=True)
class PruneReport:
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows emptied or deleted
    blobs: int = 0
    blob_bytes: int = 0
    model_calls: int = 0

    @property
    def runs(self) -> int:
        return self.tables.get("runs", 0)

    @property
    def steps(self) -> int:
        return self.tables.get("steps", 0)

    @property
    def events(self) -> int:
        return self.tables.get("events", 0)

    @property
    def empty(self) -> bool:
        return not (any(self.tables.values()) or self.blobs or self.model_calls)


class _DryRun(Exception):
    def __init__(self, report: PruneReport) -> None:
        self.report = report


def payload_tables() -> list[PayloadTable]:
    """Every component's registered payload tables (imported when asked, like the migrations)."""
    modules = dict.fromkeys(where.partition(":")[0] for where in COMPONENTS.values())
    out: list[PayloadTable] = []
    for module in modules:
        out.extend(getattr(importlib.import_module(module), "PAYLOAD_TABLES", ()))
    return out


def _blob_columns(conn: Conn) -> list[tuple[str, str]]:
    if conn.dialect.name == "sqlite":
        tables = [r[0] for r in conn.all("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [
            (t, col[1])
            for t in tables
            for col in conn.all(f'PRAGMA table_info("{t}")')
            if str(col[1]).endswith("_blob")
        ]
    rows = conn.all(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND right(column_name, 5) = '_blob'"
    )
    return [(str(t), str(c)) for t, c in rows]


def _sweep_runs(
    conn: Conn, tables: list[PayloadTable], cutoff: float, at: float, delete_runs: bool
) -> dict[str, int]:
    [runs] = [t for t in tables if t.finished is not None]
    old = f"SELECT {runs.run_column} FROM {runs.table} WHERE {runs.finished}"
    counts = {}
    for t in tables:
        if t is not runs:
            counts[t.table] = conn.execute(
                f"DELETE FROM {t.table} WHERE {t.run_column} IN ({old})", (cutoff,)
            ).rowcount
    if delete_runs:
        counts[runs.table] = conn.execute(
            f"DELETE FROM {runs.table} WHERE {runs.finished}", (cutoff,)
        ).rowcount
    else:
        empty = ", ".join(f"{c} = NULL" for c in runs.columns)
        if runs.pruned_at is not None:
            sql = f"UPDATE {runs.table} SET {empty}, {runs.pruned_at} = ? WHERE {runs.finished} AND {runs.pruned_at} IS NULL"
            params: tuple[float, ...] = (at, cutoff)
        else:
            holding = " OR ".join(f"{c} IS NOT NULL" for c in runs.columns)
            sql, params = f"UPDATE {runs.table} SET {empty} WHERE {runs.finished} AND ({holding})", (cutoff,)
        counts[runs.table] = conn.execute(sql, params).rowcount
    return {t.table: counts[t.table] for t in tables}


def prune(
    db: Database,
    older_than: float,
    *,
    delete_runs: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    also: Callable[[Conn, float], int] | None = None,
) -> PruneReport:
    """Finished runs whose end is older than ``older_than`` seconds lose their payloads (or, with
    ``delete_runs``, are deleted with the rows tied to them); unreferenced blobs go too.

    ``also(conn, cutoff)`` prunes another room's payloads (model calls) in the same transaction, before the
    blob sweep, and returns how many rows it pruned. ``dry_run`` reports and removes nothing.
    """
    at = time.time() if now is None else now
    cutoff = at - older_than
    tables = payload_tables()

    def sweep(conn: Conn) -> PruneReport:
        calls = also(conn, cutoff) if also is not None else 0
        counts = _sweep_runs(conn, tables, cutoff, at, delete_runs)
        blobs, size = drop_unreferenced(conn, _blob_columns(conn))
        report = PruneReport(tables=counts, blobs=blobs, blob_bytes=size, model_calls=calls)
        if dry_run:
            raise _DryRun(report)
        return report

    try:
        return db.run(sweep)
    except _DryRun as e:
        return e.report
