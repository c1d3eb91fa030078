"""Retention: drop the payloads of finished runs past an age, then the blobs nothing references.

A pruned run keeps its row (status, error, timings) and records when it was pruned, so whoever looks at
it later is told its payloads are gone rather than shown an empty run. A dry run does the same work in a
transaction it rolls back, so what it reports is exactly what a real run would remove at that moment.

Any column that points at a blob is named ``<something>_blob`` (a convention every room follows), so the
sweep finds references by looking at the schema instead of keeping a list that can fall out of date.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .database import Conn, Database

__all__ = ["PruneReport", "prune"]


@dataclass(frozen=True)
class PruneReport:
    runs: int
    steps: int
    events: int
    blobs: int
    blob_bytes: int
    model_calls: int = 0

    @property
    def empty(self) -> bool:
        return not (self.runs or self.steps or self.events or self.blobs or self.model_calls)


class _DryRun(Exception):
    def __init__(self, report: PruneReport) -> None:
        self.report = report


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
    ``delete_runs``, are deleted with their steps and events); unreferenced blobs go too.

    ``also(conn, cutoff)`` prunes another room's payloads (model calls) in the same transaction, before the
    blob sweep, and returns how many rows it pruned. ``dry_run`` reports and removes nothing.
    """
    at = time.time() if now is None else now
    cutoff = at - older_than

    def sweep(conn: Conn) -> PruneReport:
        calls = also(conn, cutoff) if also is not None else 0
        old = "SELECT id FROM runs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?"
        steps = conn.execute(f"DELETE FROM steps WHERE run_id IN ({old})", (cutoff,)).rowcount
        events = conn.execute(f"DELETE FROM events WHERE run_id IN ({old})", (cutoff,)).rowcount
        conn.execute(f"DELETE FROM run_attempts WHERE run_id IN ({old})", (cutoff,))
        if delete_runs:
            runs = conn.execute(old.replace("SELECT id", "DELETE", 1), (cutoff,)).rowcount
        else:
            runs = conn.execute(
                "UPDATE runs SET input = NULL, input_blob = NULL, output = NULL, output_blob = NULL, pruned_at = ? "
                "WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ? AND pruned_at IS NULL",
                (at, cutoff),
            ).rowcount
        blobs, size = _sweep_blobs(conn)
        report = PruneReport(runs, steps, events, blobs, size, calls)
        if dry_run:
            raise _DryRun(report)
        return report

    try:
        return db.run(sweep)
    except _DryRun as e:
        return e.report


def _sweep_blobs(conn: Conn) -> tuple[int, int]:
    refs = " UNION ".join(f'SELECT "{c}" FROM "{t}" WHERE "{c}" IS NOT NULL' for t, c in _blob_columns(conn))
    orphan = "SELECT hash FROM blobs" + (f" WHERE hash NOT IN ({refs})" if refs else "")
    size = conn.scalar(f"SELECT COALESCE(SUM(size), 0) FROM blobs WHERE hash IN ({orphan})")
    blobs = conn.execute(f"DELETE FROM blobs WHERE hash IN ({orphan})").rowcount
    return blobs, int(size or 0)
