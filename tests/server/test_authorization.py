"""The authorisation matrix: who may call each route of the server, checked against a real server.

:data:`ROUTES` is the reference of who may do what: one row per route that ``create_app(...)`` serves (the
REST API under ``/api/v1``, the model proxy under ``/v1``, webhooks, ``/mcp`` and each of its tools, the
console, health, metrics and docs), stating which callers get through. Every caller is tried on every
route: a key of each scope, no key, an expired key and a revoked key (on console pages: a session signed
in with each such key). The routes come from the app, not from this file, so a route added without a row
fails :func:`test_every_route_has_a_row` naming it: add a row to ``ROUTES`` in
tests/server/test_authorization.py for METHOD PATH (and an MCP tool to ``MCP_TOOLS``).

What a refusal looks like depends on who guards the route:

- ``key``: an API key's scope (``server/keys.py`` ACTIONS). Wrong scope 403; no, expired or revoked key 401.
- ``signed``: webhooks; keys do not apply. Any request without its signature is 401, whatever key it
  carries; a signed one gets through.
- ``session``: console pages. Without a live session (none, or one whose key expired or was revoked; trigger
  and proxy keys cannot sign in) a page redirects to ``/login``; a session of the wrong scope gets 403; a
  change without the session's CSRF token gets 403.
- ``public``: anyone.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import httpx2
import pytest
from fastapi.routing import iter_route_contexts
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from crewline.console.sessions import find_session, new_session
from crewline.server import create_app
from crewline.server.keys import SCOPES, revoke_key
from crewline.server.mcp_tools import TOOLS
from crewline.signing import signed_headers
from crewline.testing.fake_slack import FakeSlack, sign_slack

from .conftest import HOOK_SECRET, Api, hook_sections, make_app

Guard = Literal["key", "signed", "session", "public", "sign-in", "mcp"]
CALLERS = (*SCOPES, "none", "expired", "revoked")

EVERYONE = frozenset(CALLERS)
ADMIN = frozenset({"admin"})
OPS = frozenset({"admin", "operator"})
REVIEW = OPS | {"reviewer"}
START = OPS | {"trigger"}  # a trigger key reads and steers only the runs it started (those used here)
SELF = frozenset(SCOPES)
PROXY = frozenset({"admin", "proxy"})
NOBODY: frozenset[str] = frozenset()
SIGNING = "signing-secret-8e2f"
SLACK_TOKEN = "xoxb-test-token-4c1d"


@dataclass(frozen=True)
class Row:
    """Who gets through one route, and a request that is valid for it (so only the caller decides).

    ``path`` fills the route's parameters from the fixtures made once per server (``{waiting}``, a run of
    the ``waiter`` workflow started by the trigger key; ``{done}``, a finished ``order`` run it started; ``{review}``; ``{victim}``,
    a fresh key for each request; ``{asset}`` and ``{doc_asset}``, static files).
    """

    guard: Guard
    allowed: frozenset[str]
    path: str
    body: Any = None
    missing: bool = False
    """The request names something that does not exist, so an allowed caller gets 404 (else 404 fails)."""


CHAT = {"model": "none", "messages": [{"role": "user", "content": "hi"}]}
ROUTES: dict[tuple[str, str], Row] = {
    # health, metrics, docs
    ("GET", "/healthz"): Row("public", EVERYONE, "/healthz"),
    ("GET", "/readyz"): Row("public", EVERYONE, "/readyz"),
    ("GET", "/metrics"): Row("public", EVERYONE, "/metrics"),
    ("GET", "/openapi.json"): Row("public", EVERYONE, "/openapi.json"),
    ("GET", "/docs"): Row("public", EVERYONE, "/docs"),
    ("GET", "/docs/assets"): Row("public", EVERYONE, "{doc_asset}"),
    # the REST API
    ("GET", "/api/v1/workflows"): Row("key", START, "/api/v1/workflows"),
    ("POST", "/api/v1/runs"): Row("key", START, "/api/v1/runs", {"workflow": "nothing"}),
    ("GET", "/api/v1/runs"): Row("key", START, "/api/v1/runs"),
    ("GET", "/api/v1/runs/{run_id}"): Row("key", START, "/api/v1/runs/{waiting}"),
    ("POST", "/api/v1/runs/{run_id}/events"): Row(
        "key", START, "/api/v1/runs/{waiting}/events", {"name": "other"}
    ),
    ("POST", "/api/v1/runs/{run_id}/pause"): Row("key", OPS, "/api/v1/runs/{waiting}/pause"),
    ("POST", "/api/v1/runs/{run_id}/resume"): Row("key", OPS, "/api/v1/runs/{waiting}/resume"),
    ("POST", "/api/v1/runs/{run_id}/fork"): Row("key", OPS, "/api/v1/runs/{done}/fork", {"from_step": 1}),
    ("POST", "/api/v1/runs/{run_id}/rerun"): Row("key", OPS, "/api/v1/runs/{done}/rerun", {"from": 1}),
    ("POST", "/api/v1/runs/{run_id}/undo"): Row("key", OPS, "/api/v1/runs/{done}/undo", {}),
    ("POST", "/api/v1/runs/{run_id}/steps/{step_no}/resolve"): Row(
        "key", OPS, "/api/v1/runs/{done}/steps/1/resolve", {"outcome": "done"}
    ),
    ("POST", "/api/v1/runs/{run_id}/cancel"): Row("key", OPS, "/api/v1/runs/{waiting}/cancel"),
    ("POST", "/api/v1/workflows/{name}/pause"): Row("key", OPS, "/api/v1/workflows/echo/pause"),
    ("POST", "/api/v1/workflows/{name}/resume"): Row("key", OPS, "/api/v1/workflows/echo/resume"),
    ("POST", "/api/v1/workflows/{name}/disable"): Row("key", OPS, "/api/v1/workflows/echo/disable"),
    ("POST", "/api/v1/workflows/{name}/enable"): Row("key", OPS, "/api/v1/workflows/echo/enable"),
    ("POST", "/api/v1/queues/{name}/pause"): Row("key", OPS, "/api/v1/queues/default/pause"),
    ("POST", "/api/v1/queues/{name}/resume"): Row("key", OPS, "/api/v1/queues/default/resume"),
    ("PUT", "/api/v1/flags/{name}"): Row("key", OPS, "/api/v1/flags/tone", {"value": "warm"}),
    ("GET", "/api/v1/flags"): Row("key", OPS, "/api/v1/flags"),
    ("GET", "/api/v1/flags/{name}"): Row("key", OPS, "/api/v1/flags/tone"),
    ("DELETE", "/api/v1/flags/{name}"): Row("key", OPS, "/api/v1/flags/tone"),
    ("GET", "/api/v1/reviews"): Row("key", REVIEW, "/api/v1/reviews"),
    ("GET", "/api/v1/reviews/{review_id}"): Row("key", REVIEW, "/api/v1/reviews/{review}"),
    ("POST", "/api/v1/reviews/{review_id}/decision"): Row(
        "key", REVIEW, "/api/v1/reviews/{review}/decision", {"decision": "approve"}
    ),
    ("POST", "/api/v1/reviews/{review_id}/resolve"): Row(
        "key", OPS, "/api/v1/reviews/{review}/resolve", {"outcome": "done"}
    ),
    ("POST", "/api/v1/reviews/{review_id}/settle"): Row(
        "key", OPS, "/api/v1/reviews/{review}/settle", {"choice": "retry"}
    ),
    ("GET", "/api/v1/spend"): Row("key", OPS, "/api/v1/spend"),
    ("GET", "/api/v1/calls"): Row("key", OPS, "/api/v1/calls"),
    ("GET", "/api/v1/budgets"): Row("key", OPS, "/api/v1/budgets"),
    ("GET", "/api/v1/stats"): Row("key", OPS, "/api/v1/stats"),
    ("GET", "/api/v1/triggers"): Row("key", OPS, "/api/v1/triggers"),
    ("GET", "/api/v1/evals"): Row("key", OPS, "/api/v1/evals"),
    ("GET", "/api/v1/evals/{eval_id}"): Row("key", OPS, "/api/v1/evals/nosuch", missing=True),
    ("GET", "/api/v1/evals/{eval_id}/compare/{other_id}"): Row(
        "key", OPS, "/api/v1/evals/nosuch/compare/other", missing=True
    ),
    ("PUT", "/api/v1/prompts/{name:path}/labels/{label}"): Row(
        "key", OPS, "/api/v1/prompts/nosuch/labels/candidate", {"version": "abc"}, missing=True
    ),
    ("GET", "/api/v1/key"): Row("key", SELF, "/api/v1/key"),
    ("GET", "/api/v1/keys"): Row("key", ADMIN, "/api/v1/keys"),
    ("POST", "/api/v1/keys"): Row("key", ADMIN, "/api/v1/keys", {"scope": "proxy", "name": "made"}),
    ("DELETE", "/api/v1/keys/{key_id}"): Row("key", ADMIN, "/api/v1/keys/{victim}"),
    # the model proxy: an allowed call names a model it does not offer (404), so no provider is called
    ("GET", "/v1/models"): Row("key", PROXY, "/v1/models"),
    ("POST", "/v1/chat/completions"): Row("key", PROXY, "/v1/chat/completions", CHAT, missing=True),
    ("POST", "/v1/embeddings"): Row("key", PROXY, "/v1/embeddings", {"model": "none", "input": "hi"}, True),
    ("POST", "/v1/messages"): Row("key", PROXY, "/v1/messages", {**CHAT, "max_tokens": 5}, missing=True),
    # webhooks: their signature, never a key
    ("POST", "/hooks/{name}"): Row("signed", NOBODY, "/hooks/orders", {"id": "o1", "amount": 1}),
    ("POST", "/hooks/slack/interactions"): Row("signed", NOBODY, "/hooks/slack/interactions"),
    # crewline as an MCP server: the endpoint takes any active key; each tool is in MCP_TOOLS
    ("POST", "/mcp"): Row("mcp", SELF, "/mcp"),
    # the console
    ("GET", "/login"): Row("public", EVERYONE, "/login"),
    ("POST", "/login"): Row("sign-in", REVIEW, "/login"),
    ("GET", "/static/{digest}/{name:path}"): Row("public", EVERYONE, "{asset}"),
    ("GET", "/events"): Row("session", REVIEW, "/events"),
    ("GET", "/"): Row("session", REVIEW, "/"),
    ("GET", "/costs"): Row("session", OPS, "/costs"),
    ("GET", "/overview/charts"): Row("session", OPS, "/overview/charts"),
    ("GET", "/runs"): Row("session", OPS, "/runs?q=wait"),
    ("GET", "/runs/{run_id}"): Row("session", OPS, "/runs/{waiting}"),
    ("GET", "/runs/{run_id}/row"): Row("session", OPS, "/runs/{waiting}/row"),
    ("GET", "/runs/{run_id}/diff"): Row("session", OPS, "/runs/{done}/diff?other={waiting}"),
    ("GET", "/runs/{run_id}/steps/{step_no}/payload"): Row("session", OPS, "/runs/{done}/steps/1/payload"),
    ("POST", "/runs/{run_id}/fork"): Row("session", OPS, "/runs/{done}/fork", {"from_step": "1"}),
    ("POST", "/runs/{run_id}/steps/{step_no}/resolve"): Row(
        "session", OPS, "/runs/{done}/steps/1/resolve", {"outcome": "done"}
    ),
    ("POST", "/runs/bulk"): Row("session", OPS, "/runs/bulk", {"action": "cancel", "run": "{waiting}"}),
    ("POST", "/runs/{run_id}/cancel"): Row("session", OPS, "/runs/{waiting}/cancel"),
    ("GET", "/reviews"): Row("session", REVIEW, "/reviews"),
    ("GET", "/reviews/{review_id}"): Row("session", REVIEW, "/reviews/{review}"),
    ("POST", "/reviews/{review_id}/edit"): Row(
        "session", REVIEW, "/reviews/{review}/edit", {"preview": "{}"}
    ),
    ("POST", "/reviews/{review_id}/reject"): Row(
        "session", REVIEW, "/reviews/{review}/reject", {"comment": "no"}
    ),
    ("POST", "/reviews/{review_id}/approve"): Row("session", REVIEW, "/reviews/{review}/approve"),
    ("GET", "/prompts"): Row("session", OPS, "/prompts"),
    ("GET", "/prompts/{name:path}"): Row("session", OPS, "/prompts/nosuch", missing=True),
    ("POST", "/prompts/{name:path}/label"): Row(
        "session", OPS, "/prompts/nosuch/label", {"label": "candidate", "version": "abc"}, missing=True
    ),
    ("GET", "/memory"): Row("session", OPS, "/memory"),
    ("GET", "/memory/scope/{scope}"): Row("session", OPS, "/memory/scope/global"),
    ("GET", "/memory/item/{item_id}"): Row("session", OPS, "/memory/item/nosuch", missing=True),
    ("POST", "/memory/scope/{scope}/rollback"): Row(
        "session", OPS, "/memory/scope/global/rollback", {"snapshot": "nosuch"}
    ),
    ("GET", "/alerts"): Row("session", OPS, "/alerts"),
    ("GET", "/keys"): Row("session", ADMIN, "/keys"),
    ("POST", "/keys"): Row("session", ADMIN, "/keys", {"scope": "proxy", "name": "made"}),
    ("POST", "/keys/{key_id}/revoke"): Row("session", ADMIN, "/keys/{victim}/revoke"),
    ("POST", "/logout"): Row("session", REVIEW, "/logout"),  # last: it ends the sessions
}

# Each tool of /mcp with who may call it (the action it names in server/mcp_tools.py, as a key's scope).
MCP_TOOLS: dict[str, tuple[frozenset[str], dict[str, Any]]] = {
    "list_workflows": (START, {}),
    "start_workflow": (START, {"workflow": "nothing"}),
    "get_run": (START, {"run_id": "{waiting}"}),
    "list_reviews": (REVIEW, {}),
    "decide_review": (REVIEW, {"review_id": "{review}", "decision": "reject"}),
    "search_memory": (OPS, {"query": "refund", "scopes": ["global"]}),
}


def served_routes(api: Any) -> Iterator[tuple[str, str]]:
    """Every (method, path) the app answers, from its routing table (mounts by their prefix, /mcp as POST)."""
    for context in iter_route_contexts(api.routes):
        path = context.path
        methods = set(getattr(context.route, "methods", None) or ()) - {"HEAD"}
        for method in sorted(methods or {"GET" if path != "/mcp" else "POST"}):
            yield method, path


def test_every_route_has_a_row(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path}/routes.db", tmp_path)
    served = list(served_routes(create_app(app, workers=0)))
    missing = [f"{method} {path}" for method, path in served if (method, path) not in ROUTES]
    assert not missing, "".join(
        f"\nadd a row to ROUTES in tests/server/test_authorization.py for {route}" for route in missing
    )
    stale = sorted(set(ROUTES) - set(served))
    assert not stale, f"rows for routes the app does not serve (remove them): {stale}"
    assert set(MCP_TOOLS) == {tool.name for tool in TOOLS}, (
        "add a row to MCP_TOOLS in tests/server/test_authorization.py for each new MCP tool"
    )


@dataclass
class World:
    """One server with a key (or a console session) for every caller and the runs the rows name."""

    api: Api
    tokens: dict[str, str | None]
    sessions: dict[str, tuple[str, str] | None]  # caller: (session cookie, its CSRF token)
    values: dict[str, str]

    def fill(self, text: str) -> str:
        if "{victim}" in text:  # a key of its own for each revocation
            text = text.replace("{victim}", self.api.key("proxy").split("_")[1])
        for name, value in self.values.items():
            text = text.replace("{" + name + "}", value)
        return text

    def filled(self, body: Any) -> Any:
        return None if body is None else json.loads(self.fill(json.dumps(body)))

    def request(self, caller: str, method: str, row: Row, **extra: Any) -> httpx.Response:
        token = self.tokens[caller]
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.api.url, timeout=30, headers=headers) as client:
            return send(client, method, self.fill(row.path), json=self.filled(row.body), **extra)

    def page(self, caller: str, method: str, row: Row, csrf: bool = True) -> httpx.Response:
        session = self.sessions[caller]
        cookies = {} if session is None else {"crewline_session": session[0]}
        headers = {"X-CSRF-Token": session[1]} if session is not None and csrf else {}
        with httpx.Client(base_url=self.api.url, timeout=30, cookies=cookies, headers=headers) as client:
            return send(client, method, self.fill(row.path), data=self.filled(row.body))


def send(client: httpx.Client, method: str, path: str, **options: Any) -> httpx.Response:
    """The answer, its body read unless it is an event stream (which would not end)."""
    with client.stream(method, path, **options) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
        return response


def sign_in(api: Api, token: str) -> httpx.Response:
    """POST /login as the browser does: the form's own CSRF cookie and field, then the key."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        return client.post("/login", data={"csrf": csrf.group(1), "key": token, "next": "/"})


def session_of(api: Api, signed_in: httpx.Response) -> tuple[str, str]:
    cookie = signed_in.cookies["crewline_session"]
    session = api.app.db.run(lambda conn: find_session(conn, cookie))
    assert session is not None
    return cookie, session.csrf


def build_world(api: Api) -> World:
    tokens: dict[str, str | None] = {scope: api.key(scope) for scope in SCOPES}
    tokens["none"] = None
    tokens["expired"] = api.key("operator", expires_at=time.time() - 1)
    tokens["revoked"] = api.key("operator")
    sessions: dict[str, tuple[str, str] | None] = dict.fromkeys(CALLERS)
    for scope in ("admin", "operator", "reviewer", "revoked"):
        sessions[scope] = session_of(api, sign_in(api, str(tokens[scope])))
    expired_id = str(tokens["expired"]).split("_")[1]
    made, cookie = api.app.db.run(lambda conn: new_session(conn, expired_id, "operator", 3600, time.time()))
    sessions["expired"] = (cookie, made.csrf)
    api.app.db.run(lambda conn: revoke_key(conn, str(tokens["revoked"]).split("_")[1]))

    trigger = api.as_key(tokens["trigger"])
    waiting = trigger.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    order = {"workflow": "order", "input": {"id": "o", "amount": 2}}
    done = trigger.post("/api/v1/runs", json=order).json()["run_id"]
    refund = api.http.post("/api/v1/runs", json={"workflow": "refund", "input": {"id": "o", "amount": 3}})
    refund_id = refund.json()["run_id"]
    api.wait_status(waiting, "waiting")
    api.wait_status(done, "completed")
    api.wait_status(refund_id, "waiting")
    [review] = api.http.get("/api/v1/reviews", params={"run_id": refund_id}).json()
    login = api.http.get("/login").text
    asset = re.search(r'/static/[0-9a-f]+/[^"]+', login)
    assert asset is not None, login
    values = {
        "waiting": waiting,
        "done": done,
        "review": review["id"],
        "asset": asset.group(0),
        "doc_asset": "/docs/assets/swagger-ui.css",
    }
    return World(api, tokens, sessions, values)


Check = Callable[[World, str, str, Row], list[str]]
ANONYMOUS = ("none", "expired", "revoked")


def denied_first(row: Row, callers: tuple[str, ...] = CALLERS) -> list[str]:
    """Refused callers go first, so an allowed change (a cancel, a revocation) cannot mask a refusal."""
    return sorted(callers, key=lambda caller: caller in row.allowed)


def wrong(route: str, caller: str, got: httpx.Response, expected: str) -> str:
    text = got.text[:300] if got.is_stream_consumed else ""  # an event stream is left unread
    return f"{route} as {caller}: got {got.status_code}, expected {expected}: {text}"


def check_key(world: World, method: str, path: str, row: Row) -> list[str]:
    problems = []
    for caller in denied_first(row):
        got = world.request(caller, method, row)
        if caller in ANONYMOUS:
            ok, expected = got.status_code == 401, "401"
        elif caller in row.allowed:
            refused = (401, 403) if row.missing else (401, 403, 404)
            ok, expected = got.status_code not in refused and got.status_code < 500, "allowed"
        else:
            ok, expected = got.status_code == 403, "403"
        if not ok:
            problems.append(wrong(f"{method} {path}", caller, got, expected))
    return problems


def check_public(world: World, method: str, path: str, row: Row) -> list[str]:
    answers = {caller: world.request(caller, method, row) for caller in CALLERS}
    return [wrong(f"{method} {path}", c, r, "2xx") for c, r in answers.items() if not r.is_success]


def check_signed(world: World, method: str, path: str, row: Row) -> list[str]:
    """Any key, no signature: 401. Then the same body with its signature gets through."""
    problems = []
    if path == "/hooks/slack/interactions":
        body = b"payload=" + quote(json.dumps({"type": "shortcut"})).encode()
        signed = {"Content-Type": "application/x-www-form-urlencoded", **sign_slack(SIGNING, body)}
    else:
        body = json.dumps(world.filled(row.body)).encode()
        signed = {"Content-Type": "application/json", **signed_headers(HOOK_SECRET, body)}
    for caller in CALLERS:
        got = world.request(caller, method, Row(row.guard, row.allowed, row.path), content=body)
        if got.status_code != 401:
            problems.append(wrong(f"{method} {path}", caller, got, "401 (no signature)"))
    got = httpx.post(world.api.url + world.fill(row.path), content=body, headers=signed, timeout=30)
    if not got.is_success:
        problems.append(wrong(f"{method} {path}", "its signature", got, "2xx"))
    return problems


def check_sign_in(world: World, method: str, path: str, row: Row) -> list[str]:
    expected = {"none": 400, "expired": 401, "revoked": 401} | {
        s: 303 if s in row.allowed else 403 for s in SCOPES
    }
    problems = []
    for caller in CALLERS:
        got = sign_in(world.api, world.tokens[caller] or "")
        if got.status_code != expected[caller]:
            problems.append(wrong(f"{method} {path}", caller, got, str(expected[caller])))
    return problems


def check_session(world: World, method: str, path: str, row: Row) -> list[str]:
    problems = []
    route = f"{method} {path}"
    for caller in denied_first(row):
        if method != "GET" and world.sessions[caller] is not None and caller not in ANONYMOUS:
            got = world.page(caller, method, row, csrf=False)
            if got.status_code != 403:
                problems.append(wrong(route, caller, got, "403 without the CSRF token"))
        got = world.page(caller, method, row)
        to_login = got.status_code == 303 and got.headers["location"].startswith("/login")
        signed_out = "crewline_session=" in got.headers.get("set-cookie", "")  # what /logout answers
        if world.sessions[caller] is None or caller in ANONYMOUS:
            ok, expected = to_login, "303 to /login"
        elif caller in row.allowed:
            ok = (
                got.status_code not in ((401, 403) if row.missing else (401, 403, 404))
                and got.status_code < 500
                and (signed_out or not to_login)
            )
            expected = "allowed"
        else:
            ok, expected = got.status_code == 403, "403"
        if not ok:
            problems.append(wrong(route, caller, got, expected))
    return problems


async def call_tools(world: World) -> list[str]:
    problems = []
    for caller in SCOPES:
        headers = {"Authorization": f"Bearer {world.tokens[caller]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{world.api.url}/mcp", http_client=http)) as client,
        ):
            for tool, (allowed, arguments) in MCP_TOOLS.items():
                result = await client.call_tool(tool, world.filled(arguments))
                text = " ".join(getattr(part, "text", "") for part in result.content)
                refused = result.is_error and "may not" in text
                if refused == (caller in allowed):
                    expected = "allowed" if caller in allowed else "refused for its scope"
                    problems.append(f"MCP tool {tool} as {caller}: expected {expected}, got {text[:300]}")
    return problems


def check_mcp(world: World, method: str, path: str, row: Row) -> list[str]:
    """Without an active key /mcp is 401 before any tool; with one, each tool asks its action."""
    problems = []
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    for caller in ANONYMOUS:
        token = world.tokens[caller]
        sent = headers if token is None else {**headers, "Authorization": f"Bearer {token}"}
        got = httpx.post(world.api.url + "/mcp", json=body, headers=sent, timeout=30)
        if got.status_code != 401:
            problems.append(wrong(f"{method} {path}", caller, got, "401"))
    return problems + asyncio.run(call_tools(world))


CHECKS: dict[Guard, Check] = {
    "key": check_key,
    "public": check_public,
    "signed": check_signed,
    "sign-in": check_sign_in,
    "session": check_session,
    "mcp": check_mcp,
}


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch, hook_env: None) -> Iterator[FakeSlack]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("TEST_SLACK_SIGNING", SIGNING)
    with FakeSlack(token=SLACK_TOKEN, channels={"#ops": "C0OPS"}) as fake:
        yield fake


def every_route_configured(slack: FakeSlack) -> dict[str, Any]:
    """Sections that switch on every route: a webhook, and Slack reviews (against the fake Slack)."""
    connector = {
        "type": "slack",
        "bot_token": "env:TEST_SLACK_TOKEN",
        "signing_secret": "env:TEST_SLACK_SIGNING",
        "reviews_channel": "#ops",
        "base_url": slack.url + "/api",
    }
    return {**hook_sections(), "connectors": {"slack": connector}, "review": {"slack": "slack"}}


def test_the_matrix(api_factory: Callable[..., Api], slack_env: FakeSlack) -> None:
    """Every row, every caller, on one server per database; all mismatches are reported together."""
    api = api_factory(every_route_configured(slack_env))
    world = build_world(api)
    problems = []
    for (method, path), row in ROUTES.items():
        problems += CHECKS[row.guard](world, method, path, row)
    assert not problems, "\n".join(problems)
