"""The SMTP connector against aiosmtpd (deliveries counted by Message-ID) and Dovecot (the Sent copy)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App, Context, Settings
from crewline.connectors.records import Message
from crewline.connectors.smtp import Sent

from ..flows._drive import CrashPlan, drive, expire_leases, step_once
from ..flows.test_crash_process import stop
from . import mail_app
from .mail_servers import (
    PASSWORD,
    SMTP_PASSWORD,
    SMTP_USER,
    Dovecot,
    SmtpSink,
    dovecot,
    smtp_auth_server,
    smtp_server,
    smtp_tls_server,
)

__all__ = ["dovecot", "smtp_auth_server", "smtp_server", "smtp_tls_server"]

ORIGINAL = Message(
    message_id="<q1@customer.example>",
    references=["<q0@customer.example>"],
    sender="grace@customer.example",
    subject="Invoice question",
    text="Why was I charged twice?",
)


def mail_sections(smtp: SmtpSink, imap: Dovecot | None) -> dict[str, Any]:
    connectors: dict[str, Any] = {
        "outbox": {
            "type": "smtp",
            "host": smtp.host,
            "port": smtp.port,
            "tls": "none",
            "from_address": "Ada <ada@example.com>",
        }
    }
    if imap is not None:
        connectors["mail"] = {
            "type": "imap",
            "host": "127.0.0.1",
            "port": imap.port,
            "tls": "none",
            "user": imap.user,
            "password": "env:TEST_IMAP_PASSWORD",
        }
        connectors["outbox"]["sent"] = "mail"
    return {"connectors": connectors}


def reply_app(db_url: str, sections: dict[str, Any]) -> App:
    app = App(db_url, settings=Settings(sections=sections))

    @app.workflow()
    async def reply(ctx: Context, msg: Message) -> str:
        outbox = ctx.connector("outbox")
        sent: Sent = await outbox.call("send", to=[msg.sender], text="Sorry: refunded.", reply_to=msg)
        await ctx.step(lambda: "noted", name="note", effect="read")
        return sent.message_id

    return app


@pytest.fixture(autouse=True)
def imap_password(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    yield


async def test_a_reply_is_threaded_filed_in_sent_and_never_sent_twice_on_replay(
    db_url: str, smtp_server: SmtpSink, dovecot: Dovecot
) -> None:
    app = reply_app(db_url, mail_sections(smtp_server, dovecot))
    app.engine.crash_hook = CrashPlan([("after_step_commit", 1)])  # crash right after the send is recorded
    rid = await app.start("reply", ORIGINAL)
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    run = await drive(app, rid)
    message_id = run.output
    assert smtp_server.deliveries == {message_id: 1}
    sent = smtp_server.messages[0]
    assert sent["Subject"] == "Re: Invoice question"
    assert sent["In-Reply-To"] == "<q1@customer.example>"
    assert sent["References"] == "<q0@customer.example> <q1@customer.example>"
    assert sent["To"] == "grace@customer.example" and "ada@example.com" in sent["From"]
    filed = dovecot.search("Sent")
    assert len(filed) == 1 and message_id.encode() in filed[0]
    # The Message-ID was fixed by the step's idempotency key, recorded before the send.
    step = (await app.steps(rid))[0]
    assert step.effect == "irreversible" and step.input["idempotency_key"]
    assert app.engine.connectors.get("outbox").message_id(step.input["idempotency_key"]) == message_id  # type: ignore[attr-defined]
    app.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "hi\r\nBcc: victim@example.com"},
        {"to": ["grace@customer.example\r\nBcc: victim@example.com"]},
        {"to": ["a@example.com, b@example.com"]},
    ],
)
async def test_header_injection_is_refused_and_nothing_is_sent(
    sqlite_url: str, smtp_server: SmtpSink, fields: dict[str, Any]
) -> None:
    app = App(sqlite_url, settings=Settings(sections=mail_sections(smtp_server, None)))

    @app.workflow()
    async def send(ctx: Context, args: dict[str, Any]) -> Any:
        return await ctx.connector("outbox").call("send", {"to": ["grace@example.com"], "text": "x", **args})

    rid = await app.start("send", fields)
    run = await drive(app, rid)
    assert run.status == "failed"
    assert run.error is not None and (
        "line break" in run.error["message"] or "one email address" in run.error["message"]
    )
    assert smtp_server.deliveries == {}
    app.close()


async def test_an_unreachable_server_names_the_connector_and_what_to_check(sqlite_url: str) -> None:
    from .mail_servers import free_port

    sections = {
        "connectors": {
            "outbox": {
                "type": "smtp",
                "host": "127.0.0.1",
                "port": free_port(),
                "tls": "none",
                "from_address": "ada@example.com",
                "timeout": 5,
            }
        }
    }
    app = App(sqlite_url, settings=Settings(sections=sections))

    @app.workflow()
    async def send(ctx: Context) -> Any:
        return await ctx.connector("outbox").call("send", to=["g@example.com"], text="x")

    run = await drive(app, await app.start("send"))
    assert run.status == "failed" and run.error is not None
    assert "connector 'outbox'" in run.error["message"] and "check host, port and tls" in run.error["message"]
    app.close()


def start_worker(db_url: str, app_ref: str, cwd: Path) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "CREWLINE_DATABASE_URL": db_url,
        "CREWLINE_LEASE_SECONDS": "1",
        "CREWLINE_POLL_INTERVAL": "0.05",
        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "crewline", "worker", "--app", app_ref]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_a_worker_killed_right_after_the_send_never_sends_twice(
    db_url: str, smtp_server: SmtpSink, dovecot: Dovecot, tmp_path: Path
) -> None:
    tables = mail_sections(smtp_server, dovecot)["connectors"].items()
    toml = "\n".join(
        f"[connectors.{n}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()) for n, t in tables
    )
    (tmp_path / "crewline.toml").write_text(toml)
    app = mail_app.register(App(db_url, settings=Settings(sections=mail_sections(smtp_server, dovecot))))
    rid = await app.start("reply", ORIGINAL)
    worker = start_worker(db_url, "tests.connectors.mail_app:app", cwd=tmp_path)

    def file_then_die(raw: bytes) -> None:
        # The server accepted the email and (as Gmail does) filed it in Sent; the sender dies before the 250.
        dovecot.append(raw, "Sent")
        os.kill(worker.pid, signal.SIGKILL)

    smtp_server.before_reply = file_then_die
    try:
        assert await asyncio.to_thread(worker.wait, 60) == -signal.SIGKILL
    finally:
        stop(worker)
    await expire_leases(app)
    run = await drive(app, rid)  # another worker: the reconcile check finds the Message-ID in Sent
    assert run.status == "completed"
    assert smtp_server.deliveries == {run.output: 1}
    steps = await app.steps(rid)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("step", "outbox.send", "done"),
        ("reconcile", "reconcile outbox.send", "done"),
    ]
    assert steps[0].output["message_id"] == run.output and steps[0].output["filed_in"] == "Sent"
    app.close()


async def test_a_crash_before_the_send_is_reconciled_as_not_sent_and_sent_once(
    db_url: str, smtp_server: SmtpSink, dovecot: Dovecot
) -> None:
    app = reply_app(db_url, mail_sections(smtp_server, dovecot))
    app.engine.crash_hook = CrashPlan([("after_intent", 1)])  # the intent is committed, nothing sent
    rid = await app.start("reply", ORIGINAL)
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    run = await drive(app, rid)
    assert run.status == "completed" and smtp_server.deliveries == {run.output: 1}
    assert len(dovecot.search("Sent")) == 1
    app.close()


async def test_without_an_imap_connector_the_outcome_stays_unknown(
    sqlite_url: str, smtp_server: SmtpSink
) -> None:
    app = reply_app(sqlite_url, mail_sections(smtp_server, None))
    app.engine.crash_hook = CrashPlan([("after_intent", 1)])
    rid = await app.start("reply", ORIGINAL)
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    await step_once(app, "w2")
    run = await app.get_run(rid)
    assert run.status == "waiting" and (run.wait_reason or "").startswith("outcome unknown")
    assert smtp_server.deliveries == {}
    app.close()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
@pytest.mark.parametrize("password", [SMTP_PASSWORD, "not-the-password-77"])
async def test_auth_comes_from_a_reference_and_a_refusal_names_what_to_check(
    sqlite_url: str, smtp_auth_server: SmtpSink, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
    sections = mail_sections(smtp_auth_server, None)
    sections["connectors"]["outbox"] |= {"user": SMTP_USER, "password": "env:TEST_SMTP_PASSWORD"}
    app = reply_app(sqlite_url, sections)
    run = await drive(app, await app.start("reply", ORIGINAL))
    if password == SMTP_PASSWORD:
        assert run.status == "completed" and smtp_auth_server.deliveries == {run.output: 1}
    else:
        assert run.status == "failed" and run.error is not None and smtp_auth_server.deliveries == {}
        assert run.error["message"] == (
            "connector 'outbox': 127.0.0.1:"
            f"{smtp_auth_server.port} refused the login of 'ada': check the user and password"
        )
    assert password not in str(await app.steps(run.id))
    app.close()


@pytest.mark.parametrize("trusted", [True, False])
async def test_starttls_with_a_trusted_ca_sends_and_an_untrusted_certificate_is_refused(
    sqlite_url: str, smtp_tls_server: SmtpSink, tmp_path: Path, trusted: bool
) -> None:
    sections = mail_sections(smtp_tls_server, None)
    sections["connectors"]["outbox"] |= {"tls": "starttls"} | (
        {"ca_file": str(tmp_path / "cert.pem")} if trusted else {}
    )
    app = reply_app(sqlite_url, sections)
    run = await drive(app, await app.start("reply", ORIGINAL))
    if trusted:
        assert run.status == "completed" and smtp_tls_server.deliveries == {run.output: 1}
    else:
        assert run.status == "failed" and smtp_tls_server.deliveries == {}
        assert run.error is not None and "connector 'outbox'" in run.error["message"]
        port = smtp_tls_server.port
        assert run.error["message"] == (
            f"connector 'outbox': TLS failed while connecting to 127.0.0.1:{port} (self-signed certificate): "
            "check tls, and ca_file for a server with its own CA"
        )
    app.close()
