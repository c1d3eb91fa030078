"""``/runs``: every run, filtered by workflow, state, time and text in its input or output, a page at a
time (keyset on created_at and id, never an offset); bulk cancel and retry; rows that update themselves
over ``/events``.

The query is :func:`crewline.flows.run_store.find_runs`; cancel and retry go through the same
:class:`~crewline.App` methods as the API (``App.cancel``, ``App.rerun``) and report each run's outcome.
A filter the console cannot read is said on the page, with the runs left unfiltered by it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ...app import App
from ...errors import CrewlineError, InvalidInput
from ...flows.run_records import RunRecord, page_cursor, parse_cursor
from ...flows.run_store import STATES, RunQuery, find_runs
from ...models.reports import usage_by_run
from ...server.errors import public_error
from ..web import NavEntry, PageError, Viewer, change, console_of, page, reachable_run, render

__all__ = ["NAV", "router"]

NAV = (NavEntry(20, "Runs", "/runs", "read runs"),)
PAGE_SIZE = 50
MAX_BULK = 200
_SINCE = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}

router = APIRouter(include_in_schema=False)


@dataclass
class Filters:
    """The page's filters as the operator typed them, what the query makes of them, and what was wrong."""

    values: dict[str, str]
    query: RunQuery
    problems: list[str] = field(default_factory=list)


def read_filters(params: dict[str, str], own: str | None, workflows: list[str]) -> Filters:
    values = {
        k: params.get(k, "").strip() for k in ("workflow", "state", "since", "from", "until", "q", "after")
    }
    problems: list[str] = []
    fields: dict[str, Any] = {"started_by": own, "limit": PAGE_SIZE + 1}
    if values["workflow"]:
        if values["workflow"] in workflows:
            fields["workflow"] = values["workflow"]
        else:
            problems.append(f"There is no workflow {values['workflow']!r}; showing runs of every workflow.")
    if values["state"]:
        if values["state"] in STATES:
            fields["state"] = values["state"]
        else:
            problems.append(f"Unknown state {values['state']!r}: use one of {', '.join(STATES)}.")
    fields["since"] = _since(values, problems)
    fields["until"] = _day(values["until"], "until", problems, end=True)
    if values["q"]:
        if len(values["q"]) > 200:
            problems.append("The search text is longer than 200 characters; shorten it.")
        else:
            fields["search"] = values["q"]
    if values["after"]:
        try:
            fields["after"] = parse_cursor(values["after"])
        except InvalidInput as e:
            problems.append(f"{e}; showing the first page.")
    return Filters(values, RunQuery(**fields), problems)


def _since(values: dict[str, str], problems: list[str]) -> float | None:
    preset = values["since"]
    if preset == "today":
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if preset in _SINCE:
        return time.time() - _SINCE[preset]
    if preset:
        problems.append(f"Unknown time range {preset!r}: use 1h, 24h, today, 7d or 30d, or give dates.")
    return _day(values["from"], "from", problems, end=False)


def _day(text: str, what: str, problems: list[str], *, end: bool) -> float | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        problems.append(f"The {what} date {text!r} is not a date like 2026-11-27; it is left out.")
        return None
    return day.timestamp() + (86400.0 if end else 0.0)


@router.get("/runs")
async def runs_page(request: Request, who: Viewer = Depends(page("read runs"))) -> HTMLResponse:
    app = console_of(request).server.app
    workflows = sorted(app.workflows)
    filters = read_filters(dict(request.query_params), who.key.own_runs_only("read runs"), workflows)
    runs, usage = await _page(app, filters.query)
    more = len(runs) > PAGE_SIZE
    runs = runs[:PAGE_SIZE]
    first = {k: v for k, v in filters.values.items() if v and k != "after"}
    next_params = {**first, "after": page_cursor(runs[-1])} if more and runs else None
    context = {
        "filters": filters,
        "workflows": workflows,
        "states": STATES,
        "runs": [_row(r, usage) for r in runs],
        "next_params": next_params,
        "first_params": first if filters.values["after"] else None,
        "may_change": who.may("cancel runs") and who.may("rerun runs"),
    }
    return render(request, "runs.html", context, who=who, status=400 if filters.problems else 200)


async def _page(app: App, query: RunQuery) -> tuple[list[RunRecord], dict[str, dict[str, Any]]]:
    def read(conn: Any) -> tuple[list[RunRecord], dict[str, dict[str, Any]]]:
        runs = find_runs(conn, query)
        return runs, usage_by_run(conn, [r.id for r in runs[:PAGE_SIZE]])

    return await app.db.read(read)


def _row(run: RunRecord, usage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    end = run.finished_at
    return {
        "run": run,
        "cost": usage.get(run.id, {}).get("cost"),
        "duration": None if end is None else end - run.created_at,
        "error": public_error(run.error),
    }


@router.get("/runs/{run_id}/row")
async def run_row(run_id: str, request: Request, who: Viewer = Depends(page("read runs"))) -> HTMLResponse:
    """One row, fetched again when ``/events`` says the run changed."""
    app = console_of(request).server.app
    run = await reachable_run(app, who, "read runs", run_id)
    usage = await app.db.read(lambda conn: usage_by_run(conn, [run_id]))
    context = {"row": _row(run, usage), "may_change": who.may("cancel runs") and who.may("rerun runs")}
    return render(request, "fragments/run_row.html", context, who=who)


@router.post("/runs/bulk")
async def bulk(request: Request, who: Viewer = Depends(change("cancel runs"))) -> HTMLResponse:
    """Cancel or retry the runs ticked on the page; each run's outcome is reported on its own line."""
    form = await request.form()
    action = form.get("action")
    ids = [v for v in form.getlist("run") if isinstance(v, str) and v]
    if action not in ("cancel", "retry"):
        raise PageError(400, "Nothing done", "Choose cancel or retry for the ticked runs.")
    if action == "retry" and not who.may("rerun runs"):
        raise PageError(403, "Not for this key", f"Your key (scope {who.key.scope}) may not rerun runs.")
    if not ids:
        raise PageError(400, "Nothing done", "Tick the runs to cancel or retry first.")
    if len(ids) > MAX_BULK:
        raise PageError(400, "Nothing done", f"Tick at most {MAX_BULK} runs at once; {len(ids)} were ticked.")
    app = console_of(request).server.app
    results = [(rid, *(await _one(app, action, rid, who))) for rid in dict.fromkeys(ids)]
    return render(request, "fragments/bulk_result.html", {"action": action, "results": results}, who=who)


async def _one(app: App, action: str, run_id: str, who: Viewer) -> tuple[bool, str]:
    try:
        await reachable_run(app, who, "cancel runs", run_id)
        if action == "cancel":
            result = await app.cancel(run_id, by=who.key.who)
            return True, "cancelled" if result == "cancelled" else "cancel requested (stops at its next step)"
        steps = await app.steps(run_id)
        unsettled = [s.step_no for s in steps if s.status != "done"]
        start = min(unsettled) if unsettled else (max((s.step_no for s in steps), default=0) + 1)
        attempt, from_step = await app.rerun(run_id, start)
        return True, f"retrying from step {from_step} (attempt {attempt})"
    except (CrewlineError, PageError) as e:  # PageError: no such run, said per run like any refusal
        return False, str(e)
