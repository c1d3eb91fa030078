"""The inbox trigger against a real Dovecot: each email starts exactly one run, whatever happens."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from crewline import App, Context, Settings
from crewline.cli import main
from crewline.cli.config import check_project
from crewline.connectors.records import Message
from crewline.observe.events import AlertEvent, TriggerEvent
from crewline.workers.inbox_state import list_states, skipped_messages
from tests._leaks import logged, stored
from tests.connectors.mail_servers import PASSWORD, Dovecot, dovecot, message
from tests.server.conftest import Api, new_key, serving

__all__ = ["dovecot"]


def inbox_app(db_url: str, server: Dovecot, tmp_path: Path, **trigger: Any) -> App:
    sections = {
        "connectors": {
            "mail": {
                "type": "imap",
                "host": "127.0.0.1",
                "port": server.port,
                "tls": "none",
                "user": server.user,
                "password": "env:TEST_IMAP_PASSWORD",
            }
        },
        "triggers": {
            "inbox": {
                "connector": "mail",
                "workflow": "got",
                "poll_interval": "2s",
                "lease": "3s",
                **trigger,
            }
        },
    }
    settings = Settings(database_url=db_url, project_dir=tmp_path, poll_interval=0.02, sections=sections)
    app = App(settings=settings)

    @app.workflow()
    async def got(ctx: Context, msg: Message) -> str:
        return msg.subject

    return app


@pytest.fixture(autouse=True)
def imap_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)


@asynccontextmanager
async def working(app: App, n: int = 1) -> AsyncIterator[None]:
    workers = [app.worker(concurrency=2) for _ in range(n)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    """Wait until ``check()`` holds (a wait for an outcome, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.1)


async def subjects(app: App) -> list[str]:
    """The subjects of the emails that started runs (each run's input is the parsed Message)."""
    runs = await app.list_runs(workflow="got", limit=500)
    return sorted(Message.model_validate(r.input).subject for r in runs)


async def run_count(app: App) -> int:
    return len(await app.list_runs(workflow="got", limit=500))


async def test_mail_appended_while_running_and_while_stopped_starts_one_run_each(
    db_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    app = inbox_app(db_url, dovecot, tmp_path)
    dovecot.append(message("before start"))
    async with working(app):
        await until(lambda: _count_is(app, 1))
        dovecot.append(message("while running"))
        await until(lambda: _count_is(app, 2))
    dovecot.append(message("while stopped"))
    async with working(app):
        await until(lambda: _count_is(app, 3))
        dovecot.append(message("after restart"))
        await until(lambda: _count_is(app, 4))
    assert await subjects(app) == ["after restart", "before start", "while running", "while stopped"]
    assert dovecot.search("INBOX", "UNSEEN") == []  # each marked seen once handled
    state = (await app.db.read(list_states))[0]
    assert state.messages_seen == 4 and state.last_error is None and state.last_success is not None
    app.close()


async def _count_is(app: App, n: int) -> bool:
    count = await run_count(app)
    assert count <= n, f"{count} runs for {n} emails"
    return count == n


async def test_a_renumbered_mailbox_reruns_nothing_and_picks_up_new_mail(
    db_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    app = inbox_app(db_url, dovecot, tmp_path)
    old = message("old", message_id="<old-1@example.com>")
    dovecot.append(old)
    async with working(app):
        await until(lambda: _count_is(app, 1))
    before = (await app.db.read(list_states))[0].uidvalidity
    dovecot.recreate()
    dovecot.append(old)  # the same email restored into the new mailbox, unseen
    dovecot.append(message("new"))
    async with working(app):
        await until(lambda: _count_is(app, 2))
        await until(lambda: _all_seen(dovecot))
    assert await subjects(app) == ["new", "old"]
    assert (await app.db.read(list_states))[0].uidvalidity != before
    app.close()


async def _all_seen(server: Dovecot) -> bool:
    return await asyncio.to_thread(server.search, "INBOX", "UNSEEN") == []


async def test_a_cut_connection_resumes_without_duplicates(
    db_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    app = inbox_app(db_url, dovecot, tmp_path, backoff_max="1s")
    dovecot.append(message("one"))
    async with working(app):
        await until(lambda: _count_is(app, 1))
        await asyncio.to_thread(dovecot.restart)  # every connection cut
        dovecot.append(message("two"))
        await until(lambda: _count_is(app, 2))
        await asyncio.to_thread(dovecot.stop)  # an outage: backs off, records the error
        await until(lambda: _failing(app))
        await asyncio.to_thread(dovecot.start)
        dovecot.append(message("three"))
        await until(lambda: _count_is(app, 3))
    assert await subjects(app) == ["one", "three", "two"]
    state = (await app.db.read(list_states))[0]
    assert state.failing_since is None and state.last_error and "mail" in state.last_error
    assert PASSWORD not in state.last_error
    app.close()


async def _failing(app: App) -> bool:
    states = await app.db.read(list_states)
    return bool(states) and states[0].failing_since is not None


async def test_malformed_email_is_recorded_and_skipped_with_a_reason(
    db_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    app = inbox_app(db_url, dovecot, tmp_path, max_attachment_size=100)
    dovecot.append(message("bad charset", extra="").replace("charset=utf-8", "charset=x-no-such"))
    injected = "=?utf-8?q?hi=0D=0ABcc=3A_victim@example.com?="
    dovecot.append(message(injected))
    big = (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\nMessage-ID: <big@example.com>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="big.pdf"\r\n\r\n' + "x" * 500 + "\r\n--b--\r\n"
    )
    dovecot.append(big)
    dovecot.append(message("fine"))
    async with working(app):
        await until(lambda: _count_is(app, 1))
        await until(lambda: _skipped(app, 3))
    reasons = [r for _, _, r in await app.db.read(lambda c: skipped_messages(c, "inbox"))]
    assert "unknown charset" in reasons[0]
    assert "header injection" in reasons[1]
    assert "big.pdf" in reasons[2] and "over the limit of 100" in reasons[2]
    assert await subjects(app) == ["fine"]
    assert len(dovecot.search("INBOX")) == 4  # nothing lost: the skipped emails stay in the mailbox
    app.close()


async def _skipped(app: App, n: int) -> bool:
    return len(await app.db.read(lambda c: skipped_messages(c, "inbox"))) == n


async def test_two_workers_on_postgresql_start_one_run_per_email(
    pg_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    apps = [inbox_app(pg_url, dovecot, tmp_path) for _ in range(2)]
    for i in range(5):
        dovecot.append(message(f"m{i}"))
    async with working(apps[0]), working(apps[1]):
        await until(lambda: _count_is(apps[0], 5))
        for i in range(5, 8):
            dovecot.append(message(f"m{i}"))
        await until(lambda: _count_is(apps[0], 8))
    assert await subjects(apps[0]) == [f"m{i}" for i in range(8)]
    for a in apps:
        a.close()


async def test_crewline_triggers_shows_health_and_skipped_email(
    sqlite_url: str, dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crewline.toml").write_text(
        f'[connectors.mail]\ntype = "imap"\nhost = "127.0.0.1"\nport = {dovecot.port}\ntls = "none"\n'
        f'user = "{dovecot.user}"\npassword = "env:TEST_IMAP_PASSWORD"\n\n'
        '[triggers.inbox]\nconnector = "mail"\nworkflow = "got"\npoll_interval = "2s"\n'
    )
    app = inbox_app(sqlite_url, dovecot, tmp_path)
    dovecot.append(message("ok"))
    dovecot.append(message("bad").replace("charset=utf-8", "charset=x-no-such"))
    async with working(app):
        await until(lambda: _skipped(app, 1))
        await until(lambda: _count_is(app, 1))
    app.close()
    monkeypatch.setenv("CREWLINE_PROJECT", str(tmp_path))
    monkeypatch.setenv("CREWLINE_DATABASE_URL", sqlite_url)
    shown = CliRunner().invoke(main, ["triggers", "list"])
    assert shown.exit_code == 0, shown.output
    assert "inbox" in shown.output and "mail/INBOX" in shown.output and " ok " in shown.output
    [listed] = json.loads(CliRunner().invoke(main, ["triggers", "list", "--json"]).output)
    assert listed["status"] == "ok" and listed["messages_seen"] == 1 and listed["messages_skipped"] == 1
    served = inbox_app(sqlite_url, dovecot, tmp_path)
    with serving(served) as url:
        api = Api(served, url)
        [health] = api.http.get("/api/v1/triggers").json()
        proxy_key, trigger_key = [
            httpx.get(url + "/api/v1/triggers", headers={"Authorization": f"Bearer {new_key(served, scope)}"})
            for scope in ("proxy", "trigger")
        ]
    served.close()
    stable = ("name", "connector", "mailbox", "workflow", "status", "messages_seen", "messages_skipped")
    assert {k: health[k] for k in stable} == {k: listed[k] for k in stable}
    assert proxy_key.status_code == 403 and trigger_key.status_code == 403
    skipped = CliRunner().invoke(main, ["triggers", "skipped", "inbox"])
    assert "unknown charset 'x-no-such'" in skipped.output
    assert check_project().errors == []
    (tmp_path / "crewline.toml").write_text(
        '[triggers.inbox]\nconnector = "nope"\nworkflow = "got"\nafter = "x"\n'
    )
    assert any("[triggers.inbox] after" in e for e in check_project().errors)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def observe(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def test_wrong_credentials_show_in_health_alert_once_and_no_password_is_kept_anywhere(
    db_url: str,
    dovecot: Dovecot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pass-5ce7e1"
    monkeypatch.setenv("TEST_IMAP_PASSWORD", wrong)
    app = inbox_app(db_url, dovecot, tmp_path, backoff_max="1s")
    seen = Recorder()
    app.observers.add(seen)
    dovecot.append(message("waiting for the right password"))
    async with working(app):
        await until(lambda: _failed_polls(seen, 3))
        [state] = await app.db.read(list_states)
        assert state.failing_since is not None
        assert (
            state.last_error
            == "connector 'mail': the server refused the login of 'ada': check the user and password"
        )
        monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)  # fixed without a restart: resolved on each login
        await until(lambda: _count_is(app, 1))
        await until(lambda: _resolved(seen))
    assert [e.state for e in seen.of(AlertEvent)] == ["firing", "resolved"]  # one alert, not a storm
    assert {e.trigger for e in seen.of(TriggerEvent)} == {"inbox:inbox"}
    found = stored(app.db) + logged(caplog)
    app.close()
    for secret in (wrong, PASSWORD):
        assert secret not in found


async def _failed_polls(seen: Recorder, n: int) -> bool:
    return len([e for e in seen.of(TriggerEvent) if not e.ok]) >= n


async def _resolved(seen: Recorder) -> bool:
    return any(e.state == "resolved" for e in seen.of(AlertEvent))


async def test_a_disabled_workflow_holds_the_email_until_enabled(
    sqlite_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    app = inbox_app(sqlite_url, dovecot, tmp_path, backoff_max="1s")
    await app.steering.disable("got")
    dovecot.append(message("held"))
    async with working(app):
        await until(lambda: _failing(app))
        [state] = await app.db.read(list_states)
        assert state.last_error is not None and "disabled" in state.last_error
        assert await run_count(app) == 0 and len(dovecot.search("INBOX", "UNSEEN")) == 1  # not lost
        await app.steering.enable("got")
        await until(lambda: _count_is(app, 1))
    assert await subjects(app) == ["held"]
    app.close()
