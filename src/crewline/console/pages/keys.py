"""``/keys`` (admin only): the API keys with their scope, dates and status; creating one, whose token is
shown on the answering page once and never again (it is not stored, logged or put in a URL); revoking
one, which also ends the console sessions signed in with it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from ...errors import InvalidInput
from ...server.keys import SCOPES, ApiKey, create_key, list_keys, parse_budget, parse_lifetime, revoke_key
from ..sessions import delete_key_sessions
from ..web import PAGE_HEADERS, NavEntry, Viewer, change, console_of, page, render
from ._formats import FMT

__all__ = ["NAV", "router"]

NAV = (NavEntry(90, "Keys", "/keys", "manage keys"),)

router = APIRouter(include_in_schema=False)

_NAME_LIMIT = 200


@router.get("/keys")
async def keys(
    request: Request, revoked: str | None = None, who: Viewer = Depends(page("manage keys"))
) -> Response:
    notice = None if revoked is None else f"Key {revoked} is revoked; its sessions are signed out."
    return await _keys_page(request, who, notice=notice)


async def _keys_page(
    request: Request,
    who: Viewer,
    *,
    created: tuple[ApiKey, str] | None = None,
    message: str | None = None,
    notice: str | None = None,
    typed: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    found = await console_of(request).server.app.db.read(lambda conn: list_keys(conn))
    now = time.time()
    context = {
        "keys": [(k, k.status(now)) for k in reversed(found)],
        "scopes": SCOPES,
        "created": created,
        "message": message,
        "notice": notice,
        "typed": typed or {"scope": "operator"},
        "fmt": FMT,
    }
    return render(request, "keys.html", context, who=who, status=status)


@router.post("/keys")
async def create(request: Request, who: Viewer = Depends(change("manage keys"))) -> Response:
    form = {k: v.strip() for k, v in (await request.form()).items() if isinstance(v, str) and k != "csrf"}
    try:
        new = _options(form)
        made = await console_of(request).server.app.db.write(
            lambda conn: create_key(
                conn,
                scope=new.scope,
                name=new.name,
                budget_per_day=new.budget_per_day,
                rpm=new.rpm,
                expires_at=new.expires_at,
            )
        )
    except InvalidInput as e:
        return await _keys_page(request, who, message=f"No key created: {e}.", typed=form, status=422)
    return await _keys_page(request, who, created=made, status=201)


@dataclass(frozen=True)
class _NewKey:
    scope: str
    name: str
    budget_per_day: float | None
    rpm: int | None
    expires_at: float | None


def _options(form: dict[str, str]) -> _NewKey:
    """The key the form asks for; :class:`InvalidInput` naming the field that cannot be read."""
    name = form.get("name", "")
    if len(name) > _NAME_LIMIT or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"name: at most {_NAME_LIMIT} characters, no control characters")
    rpm_text = form.get("rpm", "")
    try:
        rpm = int(rpm_text) if rpm_text else None
    except ValueError:
        raise InvalidInput(f"requests per minute: a whole number, got {rpm_text!r}") from None
    expires = form.get("expires_in", "")
    budget = form.get("budget_per_day", "")
    return _NewKey(
        scope=form.get("scope", ""),
        name=name,
        budget_per_day=parse_budget(budget) if budget else None,
        rpm=rpm,
        expires_at=time.time() + parse_lifetime(expires, "expires in") if expires else None,
    )


@router.post("/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: str, who: Viewer = Depends(change("manage keys"))) -> Response:
    state = console_of(request).server
    try:
        key = await state.app.db.write(lambda conn: revoke_key(conn, key_id))
    except InvalidInput as e:
        return await _keys_page(request, who, message=f"Nothing revoked: {e}.", status=404)
    state.auth.forget(key.id)
    await state.app.db.write(lambda conn: delete_key_sessions(conn, key.id))
    return RedirectResponse(f"/keys?revoked={key.id}", status_code=303, headers=PAGE_HEADERS)
