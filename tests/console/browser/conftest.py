"""The console in a real browser: a ``crewline serve`` subprocess and Debian's chromium through Playwright.

One server per test session (SQLite, loopback, a random port) serves ``tests.console.browser.console_app`` with
keys of every scope made beforehand; each test gets a fresh browser context (no cookies), and fails if the
browser logged an error or a page threw. Chromium is launched from ``/usr/bin/chromium`` (installed by
``scripts/setup``; Playwright never downloads a browser); without it the tests are skipped, saying why.

Screenshots are written to ``.artifacts/console/`` at the root of the tree (git-ignored): every page at
desktop width and at 375 px, the overview in light and dark. ``python -m tests.console.browser.screenshots``
refreshes the two the README shows (``docs/images/``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewline.server.keys import create_key
from crewline.store import open_database

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / ".artifacts" / "console"
CHROMIUM = Path(os.environ.get("CREWLINE_TEST_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}
# The prompt console_app's ``answer`` drafts with, written into the served project's prompts/.
PROMPT = """---
params: [email]
description: Draft a reply to a customer's email.
---
Write a short reply to {{ email.sender }} about "{{ email.subject }}".
"""


@dataclass
class Server:
    """The running ``crewline serve``: its URL, a token per scope, and an admin client on its API."""

    url: str
    tokens: dict[str, str]
    api: httpx.Client
    log: list[str] = field(default_factory=list)

    def start(self, workflow: str, data: Any) -> str:
        answer = self.api.post("/api/v1/runs", json={"workflow": workflow, "input": data})
        assert answer.status_code in (200, 201, 202), answer.text
        run_id: str = answer.json()["run_id"]
        return run_id

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.api.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] in statuses:
                return run
            assert time.monotonic() < deadline, f"run {run_id} is {run['status']}, not {statuses}"
            time.sleep(0.05)

    def pending_review(self, run_id: str) -> str:
        """The id of the run's open review, once the run has asked for it."""
        self.wait_status(run_id, "waiting")
        reviews = self.api.get("/api/v1/reviews", params={"status": "pending"}).json()
        found = [r["id"] for r in reviews if r["run_id"] == run_id]
        assert found, f"run {run_id} has no pending review"
        return str(found[0])


def _serve(project: Path, db_url: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    env = {
        **os.environ,
        "CREWLINE_DATABASE_URL": db_url,
        "CREWLINE_POLL_INTERVAL": "0.05",
        "CREWLINE_PROJECT": str(project),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    args = ["serve", "--app", "tests.console.browser.console_app:app", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crewline", *args],
        env=env,
        cwd=project,
        text=True,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            break
    else:
        raise AssertionError(f"crewline serve exited with {proc.wait()}:\n{''.join(log)}")
    # Keep draining stderr so the server never blocks on a full pipe; the lines explain a failure.
    threading.Thread(target=lambda: log.extend(proc.stderr or ()), daemon=True).start()
    return proc, found.group(1), log


SCOPES = ("admin", "operator", "reviewer", "trigger", "proxy")


def make_project(root: Path) -> tuple[str, dict[str, str]]:
    """The served project in ``root``: its prompt, its database and a key per scope (url, tokens)."""
    (root / "prompts").mkdir()
    (root / "prompts" / "reply.md").write_text(PROMPT)
    db_url = f"sqlite:///{root / 'crewline.db'}"
    db = open_database(db_url)
    try:
        tokens = db.run(lambda conn: {s: create_key(conn, scope=s, name=s)[1] for s in SCOPES})
    finally:
        db.close()
    return db_url, tokens


@contextmanager
def running(root: Path, db_url: str, tokens: dict[str, str]) -> Iterator[Server]:
    """``crewline serve`` on the project, ready to answer; stopped (SIGTERM) at the end."""
    proc, url, log = _serve(root, db_url)
    api = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {tokens['admin']}"})
    try:
        deadline = time.monotonic() + 60
        while api.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "crewline serve did not get ready"
            time.sleep(0.05)
        yield Server(url, tokens, api, log)
    finally:
        api.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def launched() -> Iterator[Any]:
    """Debian's chromium under Playwright, headless, with a fresh profile and nothing phoning home."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-project")
    with running(root, *make_project(root)) as started:
        yield started


# Module-scoped: Playwright's sync API keeps an event loop running on this thread while it is started,
# so tests elsewhere that call asyncio.run() must not share a session with it.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: scripts/setup installs it (apt-get install chromium)")
    with launched() as browser:
        yield browser


class Errors:
    """What the browser reported as going wrong on the pages of one test."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        """A refusal the test provokes on purpose (Chromium logs a page answered with 403 as an error)."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [s for s in self.seen if not any(a in s for a in self.allowed)]

    def watch(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("pageerror", lambda e: self.seen.append(f"page error: {e}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.seen.append(f"console error at {message.location.get('url', '?')}: {message.text}")

    def _response(self, response: Any) -> None:
        # Chromium's console line for a failed load does not say which; this does. Pages a test opens on
        # purpose to see a refusal are navigations, not resources, and are left to the test to judge.
        if response.status >= 400 and response.request.resource_type != "document":
            self.seen.append(f"HTTP {response.status} for {response.url}")


@pytest.fixture
def errors() -> Errors:
    return Errors()


@pytest.fixture
def context(chromium: Any, errors: Errors) -> Iterator[Any]:
    """A fresh browser profile's worth of state (no cookies) at desktop size; every page is watched."""
    ctx = chromium.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(20_000)
    ctx.on("page", errors.watch)
    yield ctx
    ctx.close()
    assert not errors.unexpected(), "the browser reported errors:\n" + "\n".join(errors.unexpected())


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def sign_in(page: Any, server: Server, scope: str, path: str = "/") -> None:
    """Sign in through the login form as a person would, then land on ``path``."""
    page.goto(f"{server.url}/login?next={path}")
    page.get_by_label(re.compile("key", re.I)).fill(server.tokens[scope])
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.wait_for_load_state("networkidle")


def shoot(page: Any, name: str, *, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def axe_violations(page: Any) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now, one line each.

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
    govern, so the console needs no exception for the test.
    """
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await window.axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v.get("impact") in ("serious", "critical")
    ]
