"""What every console page shares: who is looking (the session and its key), the guards, the templates.

A page asks for :func:`page` with an action name from :data:`crewline.server.keys.ACTIONS`, the same map
the API consults, so a scope sees in the console exactly what it may do over the API. A route that changes
something asks for :func:`change`, which also checks the session's CSRF token (the form field ``csrf`` or
the header ``X-CSRF-Token``, compared in constant time). A request without a live session is sent to
``/login?next=<where it was>``; an htmx request gets ``HX-Redirect`` so the whole page goes, not a fragment.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..app import App
from ..errors import RunNotFound
from ..flows.run_records import RunRecord
from ..server.auth import check_reach
from ..server.keys import ACTIONS, ApiKey, get_key
from ..server.state import ServerState
from .assets import Assets
from .config import ConsoleConfig
from .live import Broadcast
from .sessions import Session, delete_key_sessions, delete_session, find_session, seen

__all__ = [
    "CONSOLE_SCOPES",
    "COOKIE",
    "CSP",
    "PAGE_HEADERS",
    "ConsoleState",
    "NavEntry",
    "PageError",
    "SignIn",
    "Viewer",
    "change",
    "change_session",
    "check_csrf",
    "console_of",
    "error_page",
    "now",
    "page",
    "reachable_run",
    "render",
    "safe_next",
    "sign_in_redirect",
    "viewer",
]

COOKIE = "crewline_session"
CONSOLE_SCOPES = ("admin", "operator", "reviewer")
# uPlot sizes its canvas through element.style, which CSP allows; no inline script or style is needed.
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["isotime"] = lambda ts: datetime.fromtimestamp(float(ts), UTC).isoformat(
    timespec="seconds"
)
_templates.filters["shorttime"] = lambda ts: datetime.fromtimestamp(float(ts), UTC).strftime(
    "%Y-%m-%d %H:%M:%S"
)


@dataclass(frozen=True)
class NavEntry:
    """A nav entry a page module declares: shown only to scopes that may do ``action``."""

    order: int
    label: str
    path: str
    action: str


@dataclass
class ConsoleState:
    server: ServerState
    config: ConsoleConfig
    assets: Assets
    broadcast: Broadcast
    nav: list[NavEntry] = field(default_factory=list)


def console_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


@dataclass(frozen=True)
class Viewer:
    """The signed-in operator: their session and the key they signed in with (never its secret)."""

    key: ApiKey
    session: Session

    def may(self, action: str) -> bool:
        return self.key.allows(action)

    @property
    def csrf(self) -> str:
        return self.session.csrf


class SignIn(Exception):
    """No live session: answered with a redirect to the sign-in page, coming back to ``next``."""

    def __init__(self, next_: str, message: str = "") -> None:
        super().__init__(message or "sign in to continue")
        self.next = next_
        self.message = message


class PageError(Exception):
    """Answered with a page (or, for htmx, a fragment) that says what went wrong and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def now() -> float:
    """The console's clock (sessions are timed by it)."""
    return time.time()


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path on this site only; anything else goes to the overview."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value) or "\\" in value:
        return "/"
    return value


def _here(request: Request) -> str:
    if request.method == "GET" and request.headers.get("HX-Request") != "true":
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{request.url.path}{query}"
    current = request.headers.get("HX-Current-URL") or request.headers.get("Referer") or "/"
    parts = urlsplit(current)
    if parts.netloc and parts.netloc != request.url.netloc:
        return "/"
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))


async def viewer(request: Request) -> Viewer:
    """A route dependency: the signed-in operator, or :class:`SignIn` when there is no live session."""
    cached = getattr(request.state, "viewer", None)
    if isinstance(cached, Viewer):
        return cached
    console = console_of(request)
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignIn(_here(request))
    db = console.server.app.db
    session = await db.read(lambda conn: find_session(conn, token))
    at = now()
    if session is None or session.ended(console.config.session_idle, at):
        if session is not None:
            await db.write(lambda conn: delete_session(conn, session.token_hash))
        raise SignIn(_here(request), "your session ended; sign in again to continue")
    key = await db.read(lambda conn: get_key(conn, session.key_id))
    if key is None or key.status(at) != "active":
        await db.write(lambda conn: delete_key_sessions(conn, session.key_id))
        status = "gone" if key is None else key.status(at)
        raise SignIn(_here(request), f"the API key you signed in with is {status}; sign in with another")
    if at - session.last_seen_at >= 60.0:
        await db.write(lambda conn: seen(conn, session, at))
    found = Viewer(key, session)
    request.state.viewer = found
    return found


def page(action: str) -> Callable[[Request], Awaitable[Viewer]]:
    """A route dependency: the signed-in operator, who must be allowed ``action`` (a name in ACTIONS)."""
    if action not in ACTIONS:  # at import time, so a misspelt action never reaches a request
        raise KeyError(f"no action {action!r} in crewline.server.keys.ACTIONS")

    async def dependency(request: Request) -> Viewer:
        who = await viewer(request)
        if not who.may(action):
            raise PageError(
                403,
                "Not for this key",
                f"Your key (scope {who.key.scope}) may not {action}. Sign in with a key whose scope allows it.",
            )
        return who

    return dependency


def change(action: str) -> Callable[[Request], Awaitable[Viewer]]:
    """A dependency for routes that change something: :func:`page`, and the session's CSRF token."""
    allowed = page(action)

    async def dependency(request: Request) -> Viewer:
        who = await viewer(request)
        await check_csrf(request, who)
        return await allowed(request)

    return dependency


async def change_session(request: Request) -> Viewer:
    """A dependency for changes any signed-in operator may make (signing out): the session and its CSRF."""
    who = await viewer(request)
    await check_csrf(request, who)
    return who


async def check_csrf(request: Request, who: Viewer) -> None:
    given = request.headers.get("X-CSRF-Token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf")
        given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given.encode(), who.csrf.encode()):
        raise PageError(
            403,
            "Form refused",
            "This form did not carry the page's security token (CSRF), so nothing was changed. "
            "Reload the page and try again.",
        )


async def reachable_run(app: App, who: Viewer, action: str, run_id: str) -> RunRecord:
    """The run, if it exists and this key may do ``action`` on it; else :class:`RunNotFound` as the API
    answers (a key that may act only on its own runs cannot learn of others')."""
    try:
        run = await app.get_run(run_id)
        check_reach(who.key, action, run)
    except RunNotFound as e:
        raise PageError(
            404, "No such run", f"{e}. It may have been pruned; find runs on the Runs page."
        ) from None
    return run


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    who: Viewer | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page ``template`` for ``who`` (None on the sign-in page), with the console's headers."""
    console = console_of(request)
    nav = [] if who is None else [entry for entry in console.nav if who.may(entry.action)]
    html = _templates.get_template(template).render(
        {
            "request_path": request.url.path,
            "who": who,
            "csrf": "" if who is None else who.csrf,
            "nav": nav,
            "static": console.assets.url,
            **(context or {}),
        }
    )
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def sign_in_redirect(request: Request, error: SignIn) -> Response:
    target = "/login" + (f"?next={quote(error.next, safe='/')}" if error.next != "/" else "")
    if error.message:
        target += ("&" if "?" in target else "?") + "ended=1"
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": target, **PAGE_HEADERS})
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


def error_page(request: Request, error: PageError) -> HTMLResponse:
    who = getattr(request.state, "viewer", None)
    template = "fragments/error.html" if request.headers.get("HX-Request") == "true" else "error.html"
    # A fragment's error goes to the page's message area, not into the table row that asked.
    headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"} if template.startswith("fragments") else {}
    return render(
        request,
        template,
        {"title": error.title, "message": error.message},
        who=who if isinstance(who, Viewer) else None,
        status=error.status,
        headers=headers,
    )
