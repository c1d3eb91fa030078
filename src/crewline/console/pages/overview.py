"""``/``: the overview, the first page after sign-in: runs today by state, cost against the day's and
month's budgets, error rates, reviews waiting, alerts firing; and ``/overview/charts``, the JSON its
charts draw (cost and calls per hour by model over 7 days, latency p50/p95 per hour).

Figures come from the owners of the tables (run_store, review_requests, call_log's rollups, the ledger
through models/reports.py, alerts) and from observe/reports.py's window; nothing here issues SQL. A key
that may not read runs (a reviewer) is sent to the first page its scope may open instead.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ...flows.review_requests import pending_requests
from ...flows.run_store import run_counts
from ...models import reports as spend_reports
from ...models.call_log import CallWindow, call_window, hourly_latency, model_hours
from ...models.config import ModelsConfig
from ...models.ledger import config_limit
from ...observe.alerts import rule_states
from ...observe.reports import parse_query, prepare
from ...store import Conn
from ..web import PAGE_HEADERS, NavEntry, Viewer, console_of, page, render, viewer

__all__ = ["NAV", "router"]

NAV = (NavEntry(10, "Overview", "/", "read runs"),)
_WEEK = 7 * 86400

router = APIRouter(include_in_schema=False)


@router.get("/")
async def overview(request: Request) -> Response:
    who = await viewer(request)
    console = console_of(request)
    if not who.may("read runs"):
        for entry in console.nav:
            if who.may(entry.action):
                return RedirectResponse(entry.path, status_code=303, headers=PAGE_HEADERS)
        return render(request, "nothing.html", who=who)
    app = console.server.app
    budgets = ModelsConfig.parse(app.settings.sections.get("models")).budgets
    now = time.time()
    figures = await app.db.read(lambda conn: _figures(conn, now, budgets, who.may("read spend")))
    return render(request, "overview.html", figures, who=who)


def _figures(conn: Conn, now: float, budgets: Any, spend: bool) -> dict[str, Any]:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    runs = run_counts(conn, today.timestamp())
    finished = sum(runs.by_state.get(s, 0) for s in ("completed", "failed", "cancelled"))
    waiting, oldest = pending_requests(conn)
    out: dict[str, Any] = {
        "now": now,
        "runs": runs,
        "run_failure_rate": _rate(runs.by_state.get("failed", 0), finished),
        "reviews_waiting": waiting,
        "oldest_review_age": None if oldest is None else now - oldest,
        "firing": sorted((rule, since) for rule, (on, since, _) in rule_states(conn).items() if on),
        "spend": spend,
    }
    if spend:
        day = call_window(conn, CallWindow(today.timestamp(), sums_only=True)).get("")
        month_calls = call_window(conn, CallWindow(month.timestamp(), sums_only=True)).get("")
        scopes = {f"day:{today:%Y-%m-%d}": "Today", f"month:{today:%Y-%m}": "This month"}
        ledger = {row["scope"]: row for row in spend_reports.budgets(conn, budgets) if row["scope"] in scopes}
        out["cost"] = [
            {
                "label": label,
                "cost": (figures.figures.cost if figures else 0.0),
                "limit": (ledger.get(scope) or {}).get("limit", config_limit(budgets, scope)),
            }
            for (scope, label), figures in zip(scopes.items(), (day, month_calls), strict=True)
        ]
        calls = day.figures.calls if day else 0
        out["calls_today"] = calls
        out["call_error_rate"] = _rate(day.figures.errors if day else 0, calls)
    return out


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@router.get("/overview/charts")
async def charts(request: Request, _: Viewer = Depends(page("read spend"))) -> JSONResponse:
    """Hourly series over the last 7 days, aligned on one time axis (uPlot's data shape)."""
    db = console_of(request).server.app.db
    query = parse_query("7d", "hour")
    await asyncio.to_thread(prepare, db, query)
    since = query.start
    hours, latency = await db.read(lambda conn: (model_hours(conn, since), hourly_latency(conn, since)))
    start = int(since // 3600) * 3600
    axis = list(range(start, int(query.now) + 1, 3600))
    index = {h: i for i, h in enumerate(axis)}
    cost: dict[str, list[float]] = {}
    calls: dict[str, list[int]] = {}
    for hour, model, n, c in hours:
        if hour in index:
            cost.setdefault(model, [0.0] * len(axis))[index[hour]] += c
            calls.setdefault(model, [0] * len(axis))[index[hour]] += n
    p50: list[float | None] = [None] * len(axis)
    p95: list[float | None] = [None] * len(axis)
    for hour, (low, high) in latency.items():
        if hour in index:
            p50[index[hour]], p95[index[hour]] = low, high
    body = {"hours": axis, "cost": cost, "calls": calls, "latency": {"p50": p50, "p95": p95}}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
