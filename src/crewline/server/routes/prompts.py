"""``/api/v1/prompts/{name}/labels/{label}``: move a prompt's label through the promotion gate, as
``crewline prompts label`` does (and the console's label action)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from ...evals.gate import Override, label_prompt
from ..auth import require
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey
from ..state import state_of
from ._body import RequestBody

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["prompts"], route_class=JsonBodyRoute)

PromptName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}$")]
Label = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_\-]{0,39}$")]


class LabelBody(RequestBody):
    version: str = Field(min_length=1, max_length=100, description="A version, prefix or another label.")
    force: bool = Field(False, description="Label production without a passing evaluation (audited).")
    reason: str | None = Field(None, max_length=2000, description="Why force is used; required with it.")


class Labelled(BaseModel):
    name: str
    label: str
    version: str | None
    previous: str | None


@router.put(
    "/prompts/{name:path}/labels/{label}",
    response_model=Labelled,
    summary="Point a prompt's label at a version (production passes the promotion gate)",
)
async def put_label(
    request: Request,
    name: PromptName,
    label: Label,
    body: LabelBody,
    key: ApiKey = Depends(require("label prompts")),
) -> Labelled:
    app = state_of(request).app
    force = Override(key.who, body.reason or "") if body.force else None
    change = await asyncio.to_thread(
        label_prompt, app.db, app.settings, name, label, body.version, force=force
    )
    return Labelled(name=change.name, label=change.label, version=change.version, previous=change.previous)
