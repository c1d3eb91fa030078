"""What the AI did over a window of time, what it cost, what failed and why, and how long people took:
the report behind ``crewline stats`` and ``GET /api/v1/stats``.

Everything is computed from the database, on SQLite and PostgreSQL alike, by the owners of the tables
read (:mod:`crewline.models.call_log` for model calls, from its hourly rollups and the raw calls around
them: :func:`prepare` rolls up what the window still lacks; :mod:`crewline.flows.run_store` for runs,
:mod:`crewline.flows.review_requests` for reviews, :mod:`crewline.memory.retrieval` for the search log), so the
numbers are those of every process sharing the database, not of one process's counters. This module only
validates the query and shapes the rows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..config import parse_duration
from ..errors import ConfigError, InvalidInput
from ..flows.review_requests import review_times
from ..flows.run_store import run_counts
from ..memory.retrieval import search_totals
from ..models.call_figures import CallFigures
from ..models.call_log import CallWindow, GroupFigures, call_window, roll_up
from ..store import Conn, Database

__all__ = ["BY", "DEFAULT_SINCE", "EXACT_UP_TO_S", "StatsQuery", "parse_query", "prepare", "stats"]

BY: tuple[str, ...] = ("model", "workflow", "key", "day", "hour")
DEFAULT_SINCE = "24h"
EXACT_UP_TO_S = 86400.0  # longer windows take percentiles from the hourly histograms
_LONGEST = 366 * 86400.0


@dataclass(frozen=True)
class StatsQuery:
    """The window (``since``: seconds back from ``now``) and the optional grouping of the model calls."""

    since_s: float
    by: str | None = None
    now: float = field(default_factory=time.time)
    rollups: bool = True  # False: every figure from the raw rows (to compare, in bench/observe.py)

    @property
    def start(self) -> float:
        return self.now - self.since_s

    @property
    def exact(self) -> bool:
        return self.since_s <= EXACT_UP_TO_S or not self.rollups


def parse_query(since: str | None, by: str | None, *, now: float | None = None) -> StatsQuery:
    """Check the user's ``since`` and ``by``; a bad one is an :class:`InvalidInput` naming what is accepted."""
    text = DEFAULT_SINCE if since is None else since
    try:
        seconds = parse_duration(text)
    except ConfigError:
        seconds = -1.0
    if not 0 < seconds <= _LONGEST:
        raise InvalidInput(
            f"since {text!r} is not a time span: give a number with m, h, d or w, like 30m, 24h, 7d "
            "(at most 366d)"
        )
    if by is not None and by not in BY:
        raise InvalidInput(f"by {by!r} is not a grouping: use one of {', '.join(BY)}")
    return StatsQuery(seconds, by, time.time() if now is None else now)


def prepare(db: Database, query: StatsQuery) -> None:
    """Roll up the closed hours of the query's window still missing (once; later reports find them)."""
    if query.rollups:
        roll_up(db, query.start, now=query.now)


def stats(conn: Conn, query: StatsQuery) -> dict[str, Any]:
    """The whole report as plain JSON-ready values; :func:`prepare` first makes long windows fast."""
    start = query.start
    out: dict[str, Any] = {
        "since": start,
        "until": query.now,
        "by": query.by,
        "percentiles": "exact" if query.exact else "histogram",
        "distinct_runs": "exact" if query.exact else "estimate",
        "calls": _calls(conn, query, "").get("", _summary(GroupFigures(CallFigures(), (), (), 0))),
    }
    if query.by is not None:
        out["groups"] = [
            {query.by: _label(query.by, g), **row} for g, row in _calls(conn, query, query.by).items()
        ]
    out["runs"] = _runs(conn, query)
    out["reviews"] = asdict(review_times(conn, start, query.now))
    out["retrieval"] = _retrieval(conn, start, 3600 if query.by == "hour" else 86400)
    return out


def _calls(conn: Conn, query: StatsQuery, by: str) -> dict[Any, dict[str, Any]]:
    window = CallWindow(query.start, by, query.exact, query.rollups)
    return {g: _summary(f) for g, f in call_window(conn, window).items()}


def _summary(group: GroupFigures) -> dict[str, Any]:
    f, calls, runs = group.figures, group.figures.calls, group.runs
    lat = (*group.latency, None, None, None)
    ttft = (*group.ttft, None, None)
    return {
        "calls": calls,
        "cost": _round(f.cost),
        "cost_per_call": _round(f.cost / calls) if calls else None,
        "runs": runs,
        "cost_per_run": _round(f.run_cost / runs) if runs else None,
        "unpriced_calls": f.unpriced,
        "errors": f.errors,
        "error_rate": _rate(f.errors, calls),
        "errors_by_class": {
            c: {"calls": n, "rate": _rate(n, calls)} for c, n in sorted(f.errors_by_class.items())
        },
        "retry_rate": _rate(f.retried, calls),
        "cache_hit_rate": _rate(f.cache_hits, calls),
        "latency_ms": {"p50": _ms(lat[0]), "p95": _ms(lat[1]), "p99": _ms(lat[2])},
        "ttft_ms": {"p50": _ms(ttft[0]), "p95": _ms(ttft[1])},
    }


def _runs(conn: Conn, query: StatsQuery) -> dict[str, Any]:
    counts = run_counts(conn, query.start)
    return {
        "by_state": dict(sorted(counts.by_state.items())),
        "completed": counts.completed,
        "completed_per_hour": round(counts.completed / (query.since_s / 3600), 3),
        "queue_depth": counts.queue_depth,
    }


def _retrieval(conn: Conn, start: float, bucket: int) -> dict[str, Any]:
    rows = search_totals(conn, start, bucket)
    searches, with_hits = sum(r[1] for r in rows), sum(r[2] for r in rows)
    scored = [(r[3], r[2]) for r in rows if r[3] is not None]
    weight = sum(n for _, n in scored)
    period = "hour" if bucket == 3600 else "day"
    return {
        "searches": searches,
        "hit_rate": _rate(with_hits, searches),
        "mean_top_score": _round(sum(t * n for t, n in scored) / weight) if weight else None,
        "series": [
            {
                period: _label(period, b),
                "searches": n,
                "hit_rate": _rate(hits, n),
                "mean_top_score": _round(top),
            }
            for b, n, hits, top in rows
        ],
    }


def _label(by: str, group: Any) -> Any:
    if by == "hour":
        return datetime.fromtimestamp(int(group), UTC).strftime("%Y-%m-%d %H:00")
    if by == "day":
        return datetime.fromtimestamp(int(group), UTC).strftime("%Y-%m-%d")
    return group


def _rate(part: Any, whole: int) -> float | None:
    return round(int(part or 0) / whole, 4) if whole else None


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
