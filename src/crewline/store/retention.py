"""Retention: drop the payloads of finished runs past an age, then the blobs nothing references.

Which rows hold a run's payloads is each component's to say: a component's ``migrations`` module (the
ones :data:`crewline.store.migrations.COMPONENTS` names) lists them in ``PAYLOAD_TABLES`` as
:class:`PayloadTable`, beside the schema that created them. The table of runs itself is registered with
``finished``, the condition that makes one of its rows a finished run past the cutoff; its rows stay and
lose their payload columns, unless runs are deleted too. Rows of the other tables tied to such a run go.

Any column that points at a blob is named ``<something>_blob`` (a convention every room follows), so the
blob sweep finds references by looking at the schema instead of keeping a list that can fall out of date.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field

from .database import Conn, Database
from .migrations import COMPONENTS
from .payloads import drop_unreferenced

__all__ = ["PayloadTable", "PruneReport", "payload_tables", "prune"]


@dataclass(frozen=True)
class PayloadTable:
    """Rows carrying payloads of runs: ``run_column`` ties a row to its run; ``columns`` are its payloads.

    ``finished`` (only for the table of runs, ``run_column`` being its key): the SQL condition, with one
    ``?`` for the cutoff time, under which a run is finished and old enough to prune.
    """

    table: str
    columns: tuple[str, ...]
    run_column: str
    finished: str | None = None


@dataclass(frozen=True)
class PruneReport:
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows emptied or deleted
    blobs: int = 0
    blob_bytes: int = 0

    @property
    def runs(self) -> int:
        return self.tables.get("runs", 0)

    @property
    def steps(self) -> int:
        return self.tables.get("steps", 0)

    @property
    def events(self) -> int:
        return self.tables.get("events", 0)


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


def _sweep_runs(conn: Conn, tables: list[PayloadTable], cutoff: float, delete_runs: bool) -> dict[str, int]:
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
        holding = " OR ".join(f"{c} IS NOT NULL" for c in runs.columns)
        counts[runs.table] = conn.execute(
            f"UPDATE {runs.table} SET {empty} WHERE {runs.finished} AND ({holding})", (cutoff,)
        ).rowcount
    return {t.table: counts[t.table] for t in tables}


def prune(db: Database, older_than: float, *, delete_runs: bool = False) -> PruneReport:
    """Finished runs whose end is older than ``older_than`` seconds lose their payloads (or, with
    ``delete_runs``, are deleted with the rows tied to them); unreferenced blobs go too."""
    cutoff = time.time() - older_than
    tables = payload_tables()

    def sweep(conn: Conn) -> PruneReport:
        counts = _sweep_runs(conn, tables, cutoff, delete_runs)
        blobs, size = drop_unreferenced(conn, _blob_columns(conn))
        return PruneReport(tables=counts, blobs=blobs, blob_bytes=size)

    return db.run(sweep)
