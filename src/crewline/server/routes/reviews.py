"""``/api/v1/reviews``: the review queue over HTTP — list, show, approve or reject, resolve unknown outcomes,
settle failed runs and failed compensations.

A decision is recorded as made by the API key that sent it (its name and id). Sending ``seen_hash`` (the
``content_hash`` of what the reviewer was shown) makes the decision fail if the request changed since.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from ...errors import InvalidInput
from ...flows.operations import parse_overrides
from ...flows.recovery import Settlement
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..starting import storable
from ..state import state_of
from ._body import RequestBody

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["reviews"], route_class=JsonBodyRoute)

_TEXT = r"^[^\x00-\x1f\x7f/]{1,200}$"
ReviewId = Annotated[str, Path(pattern=_TEXT, description="The review request's id.")]
Status = Literal["pending", "approved", "rejected", "expired", "resolved", "closed", "all"]


class ReviewOut(BaseModel):
    id: str
    run_id: str
    step_no: int
    kind: str
    action: str
    risk: str
    preview: Any
    preview_type: str | None
    context: dict[str, Any]
    status: str
    escalated: bool
    on_timeout: str
    expires_at: float | None
    decided_by: str | None
    decided_at: float | None
    comment: str | None
    shown_hash: str | None
    edit: Any
    outcome: str | None
    created_at: float
    content_hash: str = Field(description="Hash of action, preview and context: send it back as seen_hash.")


class DecisionIn(RequestBody):
    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=10_000, pattern=r"^[^\x00]*$")
    edit: Any = Field(default=None, description="With approve: the corrected preview the run continues with.")
    seen_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class SettleIn(RequestBody):
    choice: Literal["retry", "skip", "abandon", "done"] = Field(
        description="A failure review: retry, skip or abandon; a compensation review: retry, skip or done."
    )
    comment: str | None = Field(default=None, max_length=10_000, pattern=r"^[^\x00]*$")
    output: Any = Field(default=None, description="With skip of a failed step: what it returns instead.")
    input: Any = Field(default=None, description="With retry of a failed tool call: its edited arguments.")
    set: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        max_length=50,
        description='With retry of a failed run: ["model=strong", "prompt=reply@candidate"], as runs fork --set.',
    )


class ResolveIn(RequestBody):
    outcome: Literal["done", "retry", "fail"]
    output: Any = Field(default=None, description="With done: what the step returned.")


@router.get("/reviews", response_model=list[ReviewOut], summary="Review requests, escalated first")
async def list_reviews(
    request: Request,
    status: Status = "pending",
    run_id: Annotated[str | None, Query(pattern=_TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    _: ApiKey = Depends(require("read reviews")),
) -> list[ReviewOut]:
    reviews = await state_of(request).app.reviews.list(
        status=None if status == "all" else status, run_id=run_id, limit=limit
    )
    return [ReviewOut(**r.to_json()) for r in reviews]


@router.get("/reviews/{review_id}", response_model=ReviewOut, summary="One review request")
async def show_review(
    review_id: ReviewId, request: Request, _: ApiKey = Depends(require("read reviews"))
) -> ReviewOut:
    return ReviewOut(**(await state_of(request).app.reviews.get(review_id)).to_json())


@router.post("/reviews/{review_id}/decision", response_model=ReviewOut, summary="Approve or reject")
async def decide_review(
    review_id: ReviewId, body: DecisionIn, request: Request, key: ApiKey = Depends(require("decide reviews"))
) -> ReviewOut:
    reviews = state_of(request).app.reviews
    if body.decision == "approve":
        storable(body.edit, "edit")
        decided = await reviews.approve(
            review_id, by=key.who, comment=body.comment, edit=body.edit, seen_hash=body.seen_hash
        )
    else:
        if body.edit is not None:
            raise InvalidInput("an edit only goes with an approval")
        decided = await reviews.reject(review_id, by=key.who, comment=body.comment, seen_hash=body.seen_hash)
    return ReviewOut(**decided.to_json())


@router.post(
    "/reviews/{review_id}/resolve", response_model=ReviewOut, summary="Settle an 'outcome unknown' request"
)
async def resolve_review(
    review_id: ReviewId,
    body: ResolveIn,
    request: Request,
    key: ApiKey = Depends(require("settle unknown outcomes")),
) -> ReviewOut:
    storable(body.output, "output")
    resolved = await state_of(request).app.reviews.resolve(
        review_id, body.outcome, by=key.who, output=body.output
    )
    return ReviewOut(**resolved.to_json())


@router.post(
    "/reviews/{review_id}/settle",
    response_model=ReviewOut,
    summary="Settle a failed run (retry, skip, abandon) or a failed compensation (retry, skip, done)",
    responses={409: {"description": "Already settled, or the run no longer waits on it."}},
)
async def settle_review(
    review_id: ReviewId,
    body: SettleIn,
    request: Request,
    key: ApiKey = Depends(require("settle failed runs")),
) -> ReviewOut:
    storable(body.output, "output")
    storable(body.input, "input")
    answer = Settlement(
        body.choice,
        key.who,
        comment=body.comment,
        output=body.output,
        arguments=body.input,
        overrides=parse_overrides(body.set) or None,
    )
    return ReviewOut(**(await state_of(request).app.reviews.settle(review_id, answer)).to_json())
