"""``/prompts``: prompt names, their versions and labels, a version's text, a diff of two versions, and
label moves (operators and admins).

A prompt's page also lists the latest evaluations of its versions (``crewline eval run``;
``fragments/prompt_evaluations.html``, fed by :func:`evaluations`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from ...errors import InvalidInput, PromotionRefused
from ...evals.gate import label_gate
from ...evals.results import list_runs
from ...evals.targets import prompt_target
from ...flows import prompts as p
from ...store import Database
from ..diffs import side_by_side
from ..web import PAGE_HEADERS, NavEntry, PageError, Viewer, change, console_of, page, render
from ._formats import FMT

__all__ = ["NAV", "evaluations", "router"]

NAV = (NavEntry(60, "Prompts", "/prompts", "read prompts"),)

router = APIRouter(include_in_schema=False)


def evaluations(db: Database, name: str) -> list[dict[str, Any]]:
    """The latest evaluations of prompt ``name``'s versions (``crewline eval run``), newest first."""
    shown = []
    for run in list_runs(db, target=prompt_target(name, "").rstrip("@"), limit=20):
        scores = run.summary.get("scorers", {})
        score = ", ".join(f"{scorer} {figures['mean']:.2f}" for scorer, figures in scores.items())
        verdict = {True: "passed", False: "failed"}.get(run.passed) if run.passed is not None else run.status
        shown.append(
            {
                "version": run.target.rpartition("@")[2][:12],
                "dataset": f"{run.dataset}@{run.dataset_version[:8]}",
                "score": f"{score or '-'} ({verdict})",
                "at": run.finished_at or run.started_at,
            }
        )
    return shown


@router.get("/prompts")
async def prompt_list(request: Request, who: Viewer = Depends(page("read prompts"))) -> Response:
    found = await console_of(request).server.app.db.read(p.summaries)
    return render(request, "prompts.html", {"prompts": found, "fmt": FMT}, who=who)


@router.get("/prompts/{name:path}")
async def prompt(
    request: Request,
    name: str,
    version: str | None = None,
    a: str | None = None,
    b: str | None = None,
    moved: str | None = None,
    who: Viewer = Depends(page("read prompts")),
) -> Response:
    notice = None if moved is None else f"Label {moved!r} now points at version {version}."
    return await _prompt_page(request, who, name, version, a, b, notice=notice)


async def _prompt_page(
    request: Request,
    who: Viewer,
    name: str,
    version: str | None,
    a: str | None,
    b: str | None,
    *,
    message: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    db = console_of(request).server.app.db
    try:
        versions = await db.read(lambda conn: p.prompt_versions(conn, name))
    except InvalidInput as e:
        raise PageError(404, "No such prompt", f"{e}.") from None
    problems: list[str] = []
    shown = await _pick(request, name, version or "", versions[0].version, problems)
    old = new = None
    if a or b:
        old = await _pick(request, name, a or "production", versions[-1].version, problems)
        new = await _pick(request, name, b or "latest", versions[0].version, problems)
    context = {
        "name": name,
        "versions": versions,
        "shown": shown,
        "a": a or (old.version if old else ""),
        "b": b or (new.version if new else ""),
        "diff": None if old is None or new is None else side_by_side(old.source, new.source),
        "old": old,
        "new": new,
        "evaluations": await asyncio.to_thread(evaluations, db, name),
        "may_label": who.may("move prompt labels"),
        "message": message,
        "notice": notice,
        "problems": problems,
        "fmt": FMT,
    }
    return render(request, "prompt.html", context, who=who, status=status)


async def _pick(
    request: Request, name: str, selector: str, default: str, problems: list[str]
) -> p.PromptVersion:
    """The version ``selector`` names (a version, a prefix of one, or a label); a selector that names
    none is reported on the page and the default shown instead."""
    db = console_of(request).server.app.db
    if selector:
        try:
            return await db.read(lambda conn: p.lookup(conn, f"{name}@{selector}"))
        except InvalidInput as e:
            problems.append(str(e))
    return await db.read(lambda conn: p.lookup(conn, f"{name}@{default}"))


@router.post("/prompts/{name:path}/label")
async def move_label(
    request: Request, name: str, who: Viewer = Depends(change("move prompt labels"))
) -> Response:
    form = await request.form()
    label = str(form.get("label") or "").strip()
    target = str(form.get("version") or "").strip()
    app = console_of(request).server.app
    # The promotion gate of [evals.NAME] required = true, as for the CLI and the API (no override here:
    # forcing a promotion past its evaluation takes `crewline prompts label --force --reason`).
    gate = label_gate(app.settings, None)
    try:
        if not label or not target:
            raise InvalidInput("give both the label and the version it should point at")
        moved = await app.db.write(lambda conn: p.move_label(conn, name, label, target, gate=gate))
    except (InvalidInput, PromotionRefused) as e:
        return await _prompt_page(
            request, who, name, None, None, None, message=f"Label not moved: {e}.", status=422
        )
    path = f"/prompts/{name}?version={moved.version}&moved={moved.label}"
    return RedirectResponse(path, status_code=303, headers=PAGE_HEADERS)
