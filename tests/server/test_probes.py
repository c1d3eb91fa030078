"""Probes an attacker (or a careless client) would try, each as a table: oversized and malformed bodies on
every endpoint that takes one, SQL metacharacters in every filter and search, path traversal in prompt
names, CR/LF in URLs and headers crewline sends from configuration, replayed signatures."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from crewline import App, Context, InvalidInput, Settings
from crewline.cli.config import check_project
from crewline.flows.prompts import resolve, sync_prompts
from crewline.signing import signed_headers
from crewline.store import open_database
from crewline.testing.fake_slack import FakeSlack, sign_slack

from ..flows._drive import drive
from .conftest import HOOK_SECRET, Api, cli_env
from .test_authorization import (
    ROUTES,
    SIGNING,
    Row,
    World,
    build_world,
    every_route_configured,
    send,
    slack_env,
)

__all__ = ["slack_env"]  # the fixture, imported for the tests here

INJECTED = "https://a.example/done\r\nX-Injected: 1"

# Each setting that becomes a URL crewline calls or a header it sends, with CR/LF in it, and what the
# error must name. The environment holds the webhook's secret and the alert channel's URL.
HEADER_INJECTIONS: list[tuple[str, str]] = [
    (
        '[webhooks.orders]\nworkflow = "order"\nsecret_env = "HOOK_SECRET"\n'
        'callback_url = "https://a.example/done\\r\\nX-Injected: 1"\n',
        "[webhooks.orders] callback_url",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1\\r\\nX-Injected: 1"\n',
        "[models.providers.east] base_url",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1"\n'
        '[models.providers.east.headers]\nX-Team = "ops\\r\\nX-Injected: 1"\n',
        "X-Team",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1"\n'
        '[models.providers.east.headers]\n"X-Team\\r\\nX-Injected" = "1"\n',
        "a header name is one word",
    ),
    (
        '[connectors.crm]\ntype = "http"\nbase_url = "https://a.example/v1\\nX-Injected: 1"\n',
        "base_url",
    ),
    (
        '[connectors.crm]\ntype = "http"\nbase_url = "https://a.example/v1"\n'
        '[connectors.crm.headers]\nX-Team = "ops\\r\\nX-Injected: 1"\n',
        "X-Team",
    ),
    (
        '[connectors.chat]\ntype = "slack"\nbot_token = "env:HOOK_SECRET"\n'
        'base_url = "https://a.example/api\\r\\nX-Injected: 1"\n',
        "base_url",
    ),
    (
        '[alerts.channels.hook]\ntype = "webhook"\nurl_env = "ALERT_URL"\nsecret_env = "HOOK_SECRET"\n',
        "[alerts.channels.hook] url_env: the variable ALERT_URL",
    ),
]


@pytest.mark.parametrize(("toml", "named"), HEADER_INJECTIONS)
def test_line_breaks_in_urls_and_headers_are_refused_at_config_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, named: str
) -> None:
    (tmp_path / "crewline.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    env = {"HOOK_SECRET": "s3cret-for-hooks", "ALERT_URL": INJECTED}
    report = check_project(env)
    problems = [e for e in report.errors if named in e]
    assert problems, report.errors
    assert all("X-Injected" not in e and "s3cret" not in e for e in report.errors), report.errors


# --- bodies ---------------------------------------------------------------------------------------

MAX_BODY = 64 * 1024
# What each probe sends, as (content type, body); every one must be a 4xx that says what was wrong.
BODIES: dict[str, tuple[str, bytes]] = {
    "malformed JSON": ("application/json", b'{"workflow": "nothing", '),
    "not UTF-8": ("application/json", b'{"workflow": "\xff\xfe"}'),
    "nested past any limit": ("application/json", b"[" * 100_000 + b"]" * 100_000),
    "a JSON scalar": ("application/json", b"17"),
    "oversized": ("application/json", b'{"pad": "' + b"x" * (MAX_BODY * 4) + b'"}'),
    "garbage form": ("application/x-www-form-urlencoded", b"%zz=\xff&&=&csrf"),
    "truncated multipart": ("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-da"),
}


def hostile(world: World, route: str, row: Row, content_type: str, body: bytes) -> httpx.Response:
    """``body`` to the route as its rightful caller sends it: an admin key, the admin's console session
    and its CSRF token, or the webhook's own signature (so the body itself is what gets judged)."""
    headers = {"Content-Type": content_type}
    if row.guard == "signed":
        slack = row.path.endswith("interactions")
        headers |= sign_slack(SIGNING, body) if slack else signed_headers(HOOK_SECRET, body)
    elif row.guard in ("key", "mcp"):
        headers |= {"Authorization": f"Bearer {world.tokens['admin']}"}
        if row.guard == "mcp":
            headers |= {"Accept": "application/json, text/event-stream"}
    elif row.guard == "session":
        cookie, csrf = world.sessions["operator"] or ("", "")
        headers |= {"X-CSRF-Token": csrf, "Cookie": f"crewline_session={cookie}"}
    method = route.split(" ", 1)[0]
    with httpx.Client(base_url=world.api.url, timeout=60) as client:
        return send(client, method, world.fill(row.path), content=body, headers=headers)


def said(answer: httpx.Response) -> str:
    """What an error answer tells its reader: the JSON error's message, or the text of an HTML page."""
    if answer.headers.get("content-type", "").startswith("application/json"):
        error = answer.json().get("error", {})
        return str(error.get("message", "") if isinstance(error, dict) else error)
    return re.sub(r"<[^>]+>", " ", answer.text)


def probe_bodies(world: World) -> list[str]:
    problems = []
    takes_body = [
        (f"{method} {path}", row)
        for (method, path), row in ROUTES.items()
        if row.body is not None or row.guard in ("signed", "mcp", "sign-in")
    ]
    for route, row in takes_body:
        for probe, (content_type, body) in BODIES.items():
            got = hostile(world, route, row, content_type, body)
            expected = 413 if probe == "oversized" and row.guard != "session" else None
            message = said(got)
            bad = not 400 <= got.status_code < 500 or (expected and got.status_code != expected)
            if bad or not message.strip() or "Traceback" in got.text:
                problems.append(f"{route} with {probe}: {got.status_code} {message[:200]!r}")
    return problems


# --- SQL metacharacters in filters and searches ---------------------------------------------------

NOTE = "50% off_sale \\ back"
# Each metacharacter probe with what a search for it must find among the seeded runs and memories:
# "noted" (only what holds the NOTE, which has %, _ and \) or nothing at all.
METACHARACTERS: dict[str, str] = {
    "' OR 1=1 --": "nothing",
    "%": "noted",
    "_": "noted",
    "\\": "noted",
    '"; DROP TABLE runs;': "nothing",
}


def probe_api_filters(world: World) -> list[str]:
    """Every string query parameter of every GET in the schema: refused (422) or an empty answer."""
    problems = []
    schema = world.api.http.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        parameters = operations.get("get", {}).get("parameters", [])
        strings = [p["name"] for p in parameters if p["in"] == "query" and _takes_text(p["schema"])]
        for name in strings:
            for text in METACHARACTERS:
                got = world.api.http.get(path, params={name: text})
                found = got.json() if got.status_code == 200 else []
                rows = found.get("runs", []) if isinstance(found, dict) else found
                if got.status_code not in (200, 400, 422) or rows:
                    problems.append(f"GET {path}?{name}={text!r}: {got.status_code} {got.text[:200]}")
    return problems


def _takes_text(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(o.get("type") == "string" or o.get("items", {}).get("type") == "string" for o in options)


REFUSED_FILTER = {"workflow": "There is no workflow", "state": "Unknown state"}


def probe_console_search(world: World, noted: str) -> list[str]:
    """The console's runs search (input and output text) and its filters, as an operator."""
    problems = []
    cookie, _ = world.sessions["operator"] or ("", "")
    runs = (noted, world.values["waiting"], world.values["done"])
    with httpx.Client(base_url=world.api.url, cookies={"crewline_session": cookie}) as client:
        for text, expected in METACHARACTERS.items():
            for field in ("q", "workflow", "state"):
                page = client.get("/runs", params={field: text})
                shown = {run for run in runs if f"/runs/{run}" in page.text}
                want = {noted} if field == "q" and expected == "noted" else set()
                # A workflow or state the page does not know is refused in words (400) and not applied.
                refused = page.status_code == 400 and REFUSED_FILTER.get(field, "?") in said(page)
                if not refused and (page.status_code != 200 or shown != want):
                    problems.append(f"GET /runs?{field}={text!r}: {page.status_code}, showed {shown}")
    return problems


async def probe_memory_search(world: World) -> list[str]:
    """search_memory over MCP: the full-text side finds at most the note for %, _ and \\, else nothing."""
    problems = []
    headers = {"Authorization": f"Bearer {world.tokens['operator']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{world.api.url}/mcp", http_client=http)) as client,
    ):
        for text, expected in METACHARACTERS.items():
            result = await client.call_tool("search_memory", {"query": text, "scopes": ["global"]})
            hits = (result.structured_content or {}).get("hits", [])
            matched = {hit["text"] for hit in hits if hit.get("text_score") is not None}
            allowed = {NOTE} if expected == "noted" else set()  # a tokenizer may drop % or _: fewer is fine
            if result.is_error or not matched <= allowed:
                problems.append(f"search_memory {text!r}: {result.content if result.is_error else matched}")
    return problems


def remember(db_url: str, tmp_path: Path, *texts: str) -> None:
    for text in texts:
        done = subprocess.run(
            [sys.executable, "-m", "crewline", "memory", "remember", text, "--scope", "global"],
            env=cli_env(db_url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


# --- replayed signatures --------------------------------------------------------------------------


def probe_replays(world: World, slack: FakeSlack) -> list[str]:
    """A signed request accepted once is refused when sent again as it was (409), and a stale one (401):
    a webhook delivery, and a click on a review's button in Slack."""
    review = world.values["review"]
    deadline = time.monotonic() + 60
    while not (posted := [m for m in slack.messages if review in m["text"]]):
        assert time.monotonic() < deadline, "the review was never posted to Slack"
        time.sleep(0.05)
    click = slack.interaction(posted[0], "crewline_reject")
    order = json.dumps({"id": "replayed", "amount": 1}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    signed: dict[str, tuple[bytes, dict[str, str], dict[str, str]]] = {
        "/hooks/orders": (
            order,
            signed_headers(HOOK_SECRET, order),
            signed_headers(HOOK_SECRET, order, now=1e9),
        ),
        "/hooks/slack/interactions": (
            click,
            {**form, **sign_slack(SIGNING, click)},
            {**form, **sign_slack(SIGNING, click, timestamp=1_000_000_000)},
        ),
    }
    problems = []
    for path, (body, headers, stale) in signed.items():
        answers = [
            httpx.post(world.api.url + path, content=body, headers=sent, timeout=30)
            for sent in (headers, headers, stale)
        ]
        codes = [a.status_code for a in answers]
        if not (answers[0].is_success and codes[1:] == [409, 401]):
            problems.append(f"POST {path} sent, replayed, stale: {codes} {answers[1].text[:200]}")
    return problems


def test_hostile_requests_get_clear_refusals(
    api_factory: Callable[..., Api], slack_env: FakeSlack, db_url: str, tmp_path: Path
) -> None:
    """One server per database; every probe's mismatches reported together."""
    remember(db_url, tmp_path, NOTE, "Prefers email over calls")
    api = api_factory(every_route_configured(slack_env), max_body=MAX_BODY)
    world = build_world(api)
    noted = api.http.post("/api/v1/runs", json={"workflow": "echo", "input": {"note": NOTE}}).json()["run_id"]
    api.wait_status(noted, "completed")
    problems = probe_api_filters(world) + probe_console_search(world, noted)
    problems += asyncio.run(probe_memory_search(world))
    problems += probe_replays(world, slack_env) + probe_bodies(world)
    assert not problems, "\n".join(problems)
    assert len(api.http.get("/api/v1/runs").json()["runs"]) >= 4  # and the runs table is still there


# --- path traversal -------------------------------------------------------------------------------

# Paths a run's input could hand to ctx.memory.ingest, each naming a file outside the project; "{outside}"
# is that file's absolute path, "link.md" a symlink inside the project pointing to it.
TRAVERSALS = [
    "../outside.md",
    "{outside}",
    "docs/../../outside.md",
    "%2e%2e%2foutside.md",
    "docs/link.md",
    "docs",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "inside.md").write_text("# Refunds\nRefunds take five days.")
    (tmp_path / "outside.md").write_text("# Secret\nThe root password is hunter2.")
    (root / "docs" / "link.md").symlink_to(tmp_path / "outside.md")
    return root


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_a_workflow_ingests_only_files_inside_its_project(
    sqlite_url: str, project: Path, path: str
) -> None:
    app = App(settings=Settings(database_url=sqlite_url, project_dir=project))

    @app.workflow()
    async def learn(ctx: Context, where: str) -> dict[str, Any]:
        return await ctx.memory.ingest(where, scope="kb")

    try:
        inside = await drive(app, await app.start("learn", "docs/inside.md"))
        assert inside.status == "completed" and len(inside.output["added"]) == 1, inside.error
        run = await drive(app, await app.start("learn", path.format(outside=project.parent / "outside.md")))
        assert run.status == "failed" and run.error is not None
        assert (
            "inside the project directory" in run.error["message"] or "no such file" in run.error["message"]
        )
        assert not [h for h in await app.memory.search("root password", scope=["kb"]) if "hunter2" in h.text]
    finally:
        await app.aclose()


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "%2e%2e%2foutside", "docs/../../outside"])
def test_prompt_names_cannot_reach_outside_the_prompts(tmp_path: Path, name: str) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "triage.md").write_text("Triage this: {{ text }}")
    (tmp_path / "outside.md").write_text("The root password is hunter2.")
    db = open_database(f"sqlite:///{tmp_path}/p.db")
    try:
        sync_prompts(db, prompts)
        with pytest.raises(InvalidInput, match="no prompt"):
            resolve(db, name)
        (prompts / "leak.md").symlink_to(tmp_path / "outside.md")
        with pytest.raises(InvalidInput, match="outside the prompts directory"):
            sync_prompts(db, prompts)
    finally:
        db.close()
