"""``/reviews``: the review queue, the only page a reviewer key sees.

Pending requests, escalated first then oldest first, each with its preview and what produced it (the
model and prompt version of each call, the memories used with their scores, the run's cost so far), and
the recent decisions with who made them and the diff of any edit. Decisions go through the app's
:class:`~crewline.flows.review_queue.ReviewQueue`, as the API's do; a decision someone else made first is
answered with that decision, not an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from ...errors import InvalidInput, InvalidRunState, ReviewNotFound
from ...flows.review_requests import ReviewRequest, edit_problems, pending_requests, recent_decisions
from ...models.reports import usage_by_run
from ..diffs import DiffRow, side_by_side
from ..edit_form import EditForm, EditRefused, edit_form, read_edit
from ..web import PAGE_HEADERS, NavEntry, PageError, Viewer, change, console_of, page, render
from ._formats import FMT

__all__ = ["NAV", "router"]

NAV = (NavEntry(20, "Reviews", "/reviews", "read reviews"),)

router = APIRouter(include_in_schema=False)

_DECIDABLE = ("approval", "budget")
# A reviewer works from the top of the queue; the rest follow as these are decided.
_SHOWN = 50
_SETTLE = {
    "failure": "crewline review retry|skip|abandon",
    "compensation": "crewline review retry|skip|done",
    "outcome_unknown": "crewline runs resolve",
}


@dataclass(frozen=True)
class Card:
    """One request as the queue shows it."""

    req: ReviewRequest
    age: float
    cost: float | None
    calls: list[dict[str, Any]]
    memories: list[dict[str, Any]]
    decidable: bool
    settle_with: str | None
    form: EditForm | None
    diff: list[DiffRow] | None


def _card(req: ReviewRequest, now: float, cost: float | None, form: EditForm | None = None) -> Card:
    used = req.context.get("used") or []
    calls = [u for u in used if isinstance(u, dict) and u.get("kind") == "llm"]
    memories = [u for u in used if isinstance(u, dict) and u.get("kind") == "memory"]
    decidable = req.status == "pending" and req.kind in _DECIDABLE
    if decidable and form is None:
        form = edit_form(req)
    diff = side_by_side(req.preview, req.edit) if req.edit is not None and req.kind in _DECIDABLE else None
    settle = _SETTLE.get(req.kind) if req.status == "pending" else None
    return Card(req, now - req.created_at, cost, calls, memories, decidable, settle, form, diff)


async def _costs(request: Request, run_ids: list[str]) -> dict[str, float]:
    usage = await console_of(request).server.app.db.read(lambda conn: usage_by_run(conn, run_ids))
    return {run_id: float(u["cost"]) for run_id, u in usage.items()}


@router.get("/reviews")
async def queue(
    request: Request, decided: str | None = None, who: Viewer = Depends(page("read reviews"))
) -> Response:
    app = console_of(request).server.app
    pending = await app.reviews.list(status="pending", limit=_SHOWN)
    waiting, _ = await app.db.read(pending_requests)
    recent = await app.db.read(lambda conn: recent_decisions(conn, limit=25))
    costs = await _costs(request, sorted({r.run_id for r in pending + recent}))
    now = time.time()
    just = next((r for r in recent if r.id == decided), None)
    return render(
        request,
        "reviews.html",
        {
            "cards": [_card(r, now, costs.get(r.run_id)) for r in pending],
            "waiting": waiting,
            "recent": [_card(r, now, costs.get(r.run_id)) for r in recent],
            "just": just,
            "runs_link": who.may("read runs"),
            "may_decide": who.may("decide reviews"),
            "fmt": FMT,
        },
        who=who,
    )


@router.get("/reviews/{review_id}")
async def one(request: Request, review_id: str, who: Viewer = Depends(page("read reviews"))) -> Response:
    return await _show(request, who, await _get(request, review_id))


async def _get(request: Request, review_id: str) -> ReviewRequest:
    try:
        return await console_of(request).server.app.reviews.get(review_id)
    except ReviewNotFound:
        raise PageError(
            404, "No such review", f"There is no review {review_id!r}; see the review queue."
        ) from None


async def _show(
    request: Request,
    who: Viewer,
    req: ReviewRequest,
    *,
    form: EditForm | None = None,
    message: str | None = None,
    status: int = 200,
) -> Response:
    costs = await _costs(request, [req.run_id])
    card = _card(req, time.time(), costs.get(req.run_id), form)
    context = {
        "card": card,
        "message": message,
        "runs_link": who.may("read runs"),
        "may_decide": who.may("decide reviews"),
        "fmt": FMT,
    }
    return render(request, "review.html", context, who=who, status=status)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/reviews/{review_id}/approve")
async def approve(
    request: Request, review_id: str, who: Viewer = Depends(change("decide reviews"))
) -> Response:
    form = await _form(request)
    return await _decide(request, who, review_id, form, approve=True, edit=None)


@router.post("/reviews/{review_id}/reject")
async def reject(
    request: Request, review_id: str, who: Viewer = Depends(change("decide reviews"))
) -> Response:
    form = await _form(request)
    return await _decide(request, who, review_id, form, approve=False, edit=None)


@router.post("/reviews/{review_id}/edit")
async def edit(request: Request, review_id: str, who: Viewer = Depends(change("decide reviews"))) -> Response:
    form = await _form(request)
    req = await _get(request, review_id)
    if req.status != "pending":
        return await _already(request, who, req)
    try:
        value, typed = read_edit(req, form)
    except EditRefused as e:
        return await _refused(request, who, req, e.form)
    problems = edit_problems(req, value)
    if problems:
        return await _refused(request, who, req, typed.with_problems(problems))
    return await _decide(request, who, review_id, form, approve=True, edit=value, typed=typed)


async def _refused(request: Request, who: Viewer, req: ReviewRequest, form: EditForm) -> Response:
    message = "The edit was not accepted; nothing was decided. Fix the marked fields and approve again."
    return await _show(request, who, req, form=form, message=message, status=422)


async def _decide(
    request: Request,
    who: Viewer,
    review_id: str,
    form: dict[str, str],
    *,
    approve: bool,
    edit: Any,
    typed: EditForm | None = None,
) -> Response:
    reviews = console_of(request).server.app.reviews
    comment = form.get("comment", "").strip() or None
    seen = form.get("seen_hash") or None
    try:
        if approve:
            await reviews.approve(review_id, by=who.key.who, comment=comment, edit=edit, seen_hash=seen)
        else:
            await reviews.reject(review_id, by=who.key.who, comment=comment, seen_hash=seen)
    except ReviewNotFound:
        raise PageError(
            404, "No such review", f"There is no review {review_id!r}; see the review queue."
        ) from None
    except InvalidRunState as e:
        req = await _get(request, review_id)
        if req.status not in ("pending", "closed"):
            return await _already(request, who, req)
        return await _show(request, who, req, form=typed, message=f"Nothing was decided: {e}.", status=409)
    except InvalidInput as e:
        req = await _get(request, review_id)
        message = f"Nothing was decided: {e}."
        if "differs from what you reviewed" in str(e):
            message = "Nothing was decided: this review changed since you opened it. Check it again below."
        return await _show(request, who, req, form=typed, message=message, status=409)
    return RedirectResponse(f"/reviews?decided={review_id}", status_code=303, headers=PAGE_HEADERS)


async def _already(request: Request, who: Viewer, req: ReviewRequest) -> Response:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(req.decided_at or req.created_at))
    message = f"Someone else already decided this review: {req.status} by {req.decided_by or 'its policy'} at {when}. Your decision was not recorded."
    return await _show(request, who, req, message=message, status=409)
