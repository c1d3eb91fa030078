"""``/api/v1/keys``: manage API keys over HTTP (admin scope); ``/api/v1/key``: the caller's own key."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from ...errors import InvalidInput
from ..auth import require
from ..errors import ApiError
from ..json_bodies import JsonBodyRoute
from ..keys import ApiKey, create_key, list_keys, parse_lifetime, revoke_key
from ..state import state_of
from ._body import RequestBody

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["keys"], route_class=JsonBodyRoute)


class KeyOut(BaseModel):
    id: str
    name: str
    scope: str
    budget_per_day: float | None
    rpm: int | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    status: Literal["active", "expired", "revoked"]


class CreatedKey(KeyOut):
    key: str = Field(description="The key itself. It is shown only this once: store it now.")


class NewKey(RequestBody):
    scope: Literal["admin", "operator", "reviewer", "trigger", "proxy"]
    name: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    budget_per_day: float | None = Field(
        default=None, ge=0, le=1e9, description="Dollars per day (proxy keys)."
    )
    rpm: int | None = Field(default=None, ge=1, le=1_000_000, description="Requests per minute.")
    expires_in: str | None = Field(default=None, max_length=40, description="e.g. '30d', '12h'.")


def _out(key: ApiKey) -> KeyOut:
    return KeyOut(**key.to_json())


@router.get("/key", response_model=KeyOut, summary="The key making this request")
async def whoami(key: ApiKey = Depends(require("show its own key"))) -> KeyOut:
    return _out(key)


@router.get("/keys", response_model=list[KeyOut], summary="All API keys (never their secrets)")
async def all_keys(request: Request, _: ApiKey = Depends(require("manage keys"))) -> list[KeyOut]:
    keys = await state_of(request).app.db.read(lambda conn: list_keys(conn))
    return [_out(k) for k in keys]


@router.post("/keys", response_model=CreatedKey, status_code=201, summary="Create an API key")
async def new_key(body: NewKey, request: Request, _: ApiKey = Depends(require("manage keys"))) -> CreatedKey:
    expires_at = (
        None if body.expires_in is None else time.time() + parse_lifetime(body.expires_in, "expires_in")
    )
    key, token = await state_of(request).app.db.write(
        lambda conn: create_key(
            conn,
            scope=body.scope,
            name=body.name,
            budget_per_day=body.budget_per_day,
            rpm=body.rpm,
            expires_at=expires_at,
        )
    )
    return CreatedKey(**key.to_json(), key=token)


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke an API key")
async def revoke(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
    request: Request,
    _: ApiKey = Depends(require("manage keys")),
) -> KeyOut:
    state = state_of(request)
    try:
        key = await state.app.db.write(lambda conn: revoke_key(conn, key_id))
    except InvalidInput as e:
        raise ApiError(404, "key_not_found", str(e)) from e
    state.auth.forget(key.id)
    return _out(key)
