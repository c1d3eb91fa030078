"""``/runs/{id}``: one run: its header (state, times, cost, parent, children, attempts) and its timeline,
:data:`STEPS_PER_PAGE` steps at a time so a run of 10,000 steps never loads whole; each step's model,
prompt version, tokens, cost and memory hits; its input and output fetched on demand. Actions: cancel,
fork from a step (with a model or prompt override), diff against another run, resolve an "outcome
unknown" step: each through the App method the API uses.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...errors import CrewlineError
from ...flows.operations import parse_overrides
from ...flows.run_diff import diff_verdict, step_diff
from ...flows.run_records import RunRecord
from ...flows.run_store import RunQuery, find_runs
from ...flows.step_store import LargePayload, StepRecord, last_step, one_step, step_page
from ...models.reports import usage_by_run, usage_by_step
from ...server.errors import public_error
from ...store.payloads import parse_json
from ..web import PAGE_HEADERS, NavEntry, PageError, Viewer, change, console_of, page, reachable_run, render

__all__ = ["NAV", "STEPS_PER_PAGE", "router"]

NAV: tuple[NavEntry, ...] = ()
STEPS_PER_PAGE = 200
_SHOWN_INLINE = 600  # characters of JSON shown open; longer payloads are fetched when opened

router = APIRouter(include_in_schema=False)


@router.get("/runs/{run_id}")
async def run_page(
    run_id: str, request: Request, after: int = 0, who: Viewer = Depends(page("read runs"))
) -> HTMLResponse:
    return await _render_run(request, who, run_id, max(0, after))


async def _render_run(
    request: Request,
    who: Viewer,
    run_id: str,
    after: int,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    app = console_of(request).server.app
    run = await reachable_run(app, who, "read runs", run_id)

    def read(conn: Any) -> dict[str, Any]:
        steps = step_page(conn, run_id, after, STEPS_PER_PAGE)
        children = find_runs(conn, RunQuery(parent_id=run_id, limit=20))
        return {
            "steps": steps,
            "count": last_step(conn, run_id),
            "usage": usage_by_run(conn, [run_id]).get(run_id),
            "step_usage": usage_by_step(conn, run_id, (after + 1, after + STEPS_PER_PAGE)),
            "children": children,
        }

    data = await app.db.read(read)
    attempts = await app.attempts(run_id)
    end = run.finished_at or time.time()
    context = {
        "run": run,
        "error": public_error(run.error),
        "usage": data["usage"],
        "children": data["children"],
        "attempts": attempts,
        "steps": [
            _step_view(s, data["step_usage"].get(s.step_no), run.created_at, end) for s in data["steps"]
        ],
        "count": data["count"],
        "after": after,
        "per_page": STEPS_PER_PAGE,
        "may": {a: who.may(a) for a in ("cancel runs", "fork runs", "settle unknown outcomes")},
        "form": {},
        **(extra or {}),
    }
    return render(request, "run.html", context, who=who, status=status)


def _step_view(step: StepRecord, usage: dict[str, Any] | None, start: float, end: float) -> dict[str, Any]:
    span = max(end - start, 1e-6)
    finished = step.finished_at if step.finished_at is not None else end
    output = step.output if isinstance(step.output, dict) else {}
    hits = output.get("hits") if step.name.startswith("memory.search") else None
    return {
        "step": step,
        "error": public_error(step.error),
        "duration": None if step.finished_at is None else step.finished_at - step.started_at,
        "offset": max(0.0, min(100.0, (step.started_at - start) / span * 100)),
        "width": max(0.4, min(100.0, (finished - step.started_at) / span * 100)),
        "model": output.get("model") if step.kind == "llm" else None,
        "prompt": output.get("prompt") if step.kind == "llm" else None,
        "usage": usage,
        "hits": hits if isinstance(hits, list) else None,
        "input": _shown(step.input),
        "output": _shown(step.output),
    }


def _shown(value: Any) -> dict[str, Any] | None:
    """A payload as the timeline shows it: open when short, else only its size until asked for."""
    if value is None:
        return None
    if isinstance(value, LargePayload):
        return {"text": None}
    text = _pretty(value)
    return {"text": text if len(text) <= _SHOWN_INLINE else None, "size": len(text)}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@router.get("/runs/{run_id}/steps/{step_no}/payload")
async def step_payload(
    run_id: str,
    step_no: int,
    request: Request,
    part: str = "output",
    who: Viewer = Depends(page("read runs")),
) -> HTMLResponse:
    """One step's input or output, whole: the htmx fetch behind a collapsed payload."""
    if part not in ("input", "output"):
        raise PageError(
            400, "No such part", "A step has an input and an output; ask for part=input or part=output."
        )
    app = console_of(request).server.app
    await reachable_run(app, who, "read runs", run_id)
    step = await app.db.read(lambda conn: one_step(conn, run_id, step_no))
    if step is None:
        raise PageError(404, "No such step", f"Run {run_id} has no step {step_no}.")
    text = _pretty(step.input if part == "input" else step.output)
    return render(request, "fragments/payload.html", {"text": text}, who=who)


@router.post("/runs/{run_id}/cancel")
async def cancel(run_id: str, request: Request, who: Viewer = Depends(change("cancel runs"))) -> Response:
    app = console_of(request).server.app
    await reachable_run(app, who, "cancel runs", run_id)
    try:
        result = await app.cancel(run_id, by=who.key.who)
    except CrewlineError as e:
        return await _render_run(request, who, run_id, 0, {"problem": str(e)}, 409)
    said = "Cancelled." if result == "cancelled" else "Cancel requested: the run stops at its next step."
    return await _render_run(request, who, run_id, 0, {"notice": said})


@router.post("/runs/{run_id}/fork")
async def fork(run_id: str, request: Request, who: Viewer = Depends(change("fork runs"))) -> Response:
    """A new run reusing this one's steps before ``from_step``, optionally with another model or prompt."""
    app = console_of(request).server.app
    await reachable_run(app, who, "fork runs", run_id)
    form = await request.form()
    typed = {k: str(form.get(k) or "").strip() for k in ("from_step", "model", "prompt")}
    try:
        settings = [f"{k}={typed[k]}" for k in ("model", "prompt") if typed[k]]
        overrides = parse_overrides(settings) or None
        from_step: int | str = int(typed["from_step"]) if typed["from_step"].isdigit() else typed["from_step"]
        if not typed["from_step"]:
            raise PageError(400, "Nothing forked", "Say which step to fork from (its number or name).")
        fork_id = await app.fork(run_id, from_step, overrides=overrides)
    except (CrewlineError, PageError) as e:
        problem = f"Not forked: {e}".replace("--set ", "")
        return await _render_run(request, who, run_id, 0, {"problem": problem, "form": typed}, 400)
    return RedirectResponse(f"/runs/{fork_id}", status_code=303, headers=PAGE_HEADERS)


@router.post("/runs/{run_id}/steps/{step_no}/resolve")
async def resolve(
    run_id: str, step_no: int, request: Request, who: Viewer = Depends(change("settle unknown outcomes"))
) -> Response:
    """Settle an irreversible step whose outcome is unknown: it happened (with its output), call it
    again, or record it as failed."""
    app = console_of(request).server.app
    await reachable_run(app, who, "settle unknown outcomes", run_id)
    form = await request.form()
    outcome = str(form.get("outcome") or "")
    raw = str(form.get("output") or "").strip()
    try:
        if outcome not in ("done", "retry", "fail"):
            raise PageError(400, "Not resolved", "Choose what happened: done, retry or fail.")
        output = parse_json(raw, "the step's output") if outcome == "done" and raw else None
        await app.resolve(run_id, step_no, outcome, output)  # type: ignore[arg-type]
    except (CrewlineError, PageError) as e:
        extra = {"problem": f"Step {step_no} not resolved: {e}", "form": {"output": raw, "step": step_no}}
        return await _render_run(request, who, run_id, 0, extra, 400)
    return await _render_run(request, who, run_id, 0, {"notice": f"Step {step_no} resolved: {outcome}."})


@router.get("/runs/{run_id}/diff")
async def diff(
    run_id: str, request: Request, other: str = "", who: Viewer = Depends(page("read runs"))
) -> HTMLResponse:
    """This run's steps against another's (a fork against its original, say), as `crewline runs diff`."""
    app = console_of(request).server.app
    run = await reachable_run(app, who, "read runs", run_id)
    other = other.strip() or (run.forked_from or "")
    if not other:
        raise PageError(400, "Nothing to compare", "Give the id of the run to compare this one with.")
    against: RunRecord = await reachable_run(app, who, "read runs", other)
    rows = step_diff(await app.steps(run_id), await app.steps(other))
    shown = [
        {
            **row,
            "verdict": diff_verdict(row),
            "a_text": None if row["same"] else _pretty(_fields(row, "a")),
            "b_text": None if row["same"] else _pretty(_fields(row, "b")),
        }
        for row in rows
    ]
    context = {"run": run, "other": against, "rows": shown, "differ": sum(1 for r in rows if not r["same"])}
    return render(request, "run_diff.html", context, who=who)


def _fields(row: dict[str, Any], side: str) -> Any:
    value = row[side]
    if row["fields"] and isinstance(value, dict):
        return {k: value.get(k) for k in row["fields"]}
    return value
