"""``/login`` and ``/logout``: signing in to the console with an API key, and out again.

The key is checked by the server's :class:`~crewline.server.auth.Authenticator`, so failed sign-ins count
towards the same per-address throttling as failed API calls. Only keys of a console scope (admin,
operator, reviewer) may sign in; the key is never rendered back, not even into the form after a mistake.
The sign-in form carries its own CSRF token (a cookie and a hidden field that must match), since there
is no session yet to hold one.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...server.auth import client_address
from ...server.errors import ApiError
from ..sessions import delete_session, new_session
from ..web import (
    CONSOLE_SCOPES,
    COOKIE,
    PAGE_HEADERS,
    NavEntry,
    Viewer,
    change_session,
    console_of,
    now,
    render,
    safe_next,
)

__all__ = ["NAV", "router"]

NAV: tuple[NavEntry, ...] = ()
_LOGIN_COOKIE = "crewline_login"

router = APIRouter(include_in_schema=False)


@router.get("/login")
async def login_form(request: Request, next: str = "/", ended: int = 0) -> HTMLResponse:
    message = "Your session ended; sign in again to continue." if ended else ""
    return _form(request, safe_next(next), message)


def _form(request: Request, next_: str, message: str = "", status: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "login.html", {"next": next_, "message": message, "login_csrf": token}, status=status
    )
    response.set_cookie(
        _LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    next_ = safe_next(_text(form.get("next")))
    sent = _text(form.get("csrf"))
    expected = request.cookies.get(_LOGIN_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _form(request, next_, "The sign-in form had expired; enter your key again.", 403)
    token = _text(form.get("key")).strip()
    if not token:
        return _form(request, next_, "Enter an API key (create one with `crewline keys create`).", 400)
    console = console_of(request)
    try:
        key = await console.server.auth.authenticate(token, client_address(request))
    except ApiError as e:
        return _form(request, next_, _sign_in_message(e), e.status)
    if key.scope not in CONSOLE_SCOPES:
        return _form(
            request,
            next_,
            f"A key of scope {key.scope!r} cannot sign in to the console; use a key of scope "
            "admin, operator or reviewer (`crewline keys create --scope operator`).",
            403,
        )
    lifetime = console.config.session_max
    _, session_token = await console.server.app.db.write(
        lambda conn: new_session(conn, key.id, key.scope, lifetime, now())
    )
    response = RedirectResponse(next_, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        COOKIE,
        session_token,
        max_age=int(lifetime),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(_LOGIN_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


def _sign_in_message(error: ApiError) -> str:
    if error.status == 429:
        return f"Too many failed sign-ins from this address. {error.message.split('; ', 1)[-1].capitalize()}."
    if error.type in ("key_revoked", "key_expired"):
        return f"That API key is {error.type.removeprefix('key_')}; sign in with an active key."
    return "That API key is not valid. Check that you pasted the whole key (it starts with crl_)."


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@router.post("/logout")
async def logout(request: Request, who: Viewer = Depends(change_session)) -> Response:
    await console_of(request).server.app.db.write(lambda conn: delete_session(conn, who.session.token_hash))
    response = RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
