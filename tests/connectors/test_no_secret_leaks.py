"""The secrets audit: one run through every connector, then no secret in any log, table or span.

An email lands in a real Dovecot; the inbox trigger (IMAP password from the secrets store) starts a run
that reads a contact from the loopback CRM (OAuth2 client credentials, the client secret from the store),
opens a ticket on an official-SDK MCP server (a bearer header from the store), posts to the fake Slack
(bot token from the store) and asks for a review there; the review is decided by a click with Slack's
signature (signing secret from the environment); the run then replies over SMTP with AUTH (password
from the environment). An MCP client follows the run through crewline's own ``/mcp`` with an API key,
and spans go to a loopback OTLP/HTTP collector with an API key header of their own. Afterwards every
value that must stay secret is searched for in the captured log records, every table of the database
and the exported spans.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pydantic
import pytest

from crewline import App, Context, Settings
from crewline.connectors.http import HttpOperation
from crewline.connectors.mapping import FieldMap
from crewline.connectors.records import Contact, Message
from crewline.secret_store import SecretStore, new_key, secrets_key
from crewline.testing.fake_slack import FakeSlack

from .._leaks import exported, leaks, logged, stored_at
from ..observe._receivers import SpanReceiver, collector
from ..server.conftest import Api, serving
from ..server.test_mcp import connect, ok
from ..server.test_slack_reviews import ANA, hook, posted
from . import _mcp_server
from ._crm import CLIENT_ID, CLIENT_SECRET, STATIC_TOKEN, FakeCrm, serving_crm
from .mail_servers import (
    PASSWORD,
    SMTP_PASSWORD,
    SMTP_USER,
    Dovecot,
    SmtpSink,
    dovecot,
    message,
    smtp_auth_server,
)
from .test_mcp_client import TOKEN as MCP_TOKEN
from .test_mcp_client import mcp_url

__all__ = ["collector", "dovecot", "mcp_url", "smtp_auth_server"]

KEY = new_key()
SLACK_TOKEN = "xoxb-audit-bot-token-3e9d"
SLACK_SIGNING = "audit-signing-secret-51f0"
COLLECTOR_KEY = "audit-collector-key-a7c4"


class ContactId(pydantic.BaseModel):
    id: str


GET_CONTACT = HttpOperation(
    "get_contact",
    "read",
    ContactId,
    method="GET",
    path="/contacts/{id}",
    map=FieldMap(Contact, {"source_id": "id", "name": "name", "email": "email"}),
)


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    with serving_crm(
        FakeCrm(contacts={"7": {"id": 7, "name": "Grace", "email": "grace@customer.example"}})
    ) as s:
        yield s


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN, channels={"#ops": "C0OPS"}) as fake:
        yield fake


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``env:`` half of the references (the ``secret:`` half is stored in the test)."""
    monkeypatch.setenv("CREWLINE_SECRETS_KEY", KEY)
    monkeypatch.setenv("AUDIT_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("AUDIT_SLACK_SIGNING", SLACK_SIGNING)
    monkeypatch.setenv("AUDIT_OTLP_HEADERS", f"x-api-key={COLLECTOR_KEY}")


STORED = {
    "imap_password": PASSWORD,
    "crm_client_secret": CLIENT_SECRET,
    "mcp_authorization": f"Bearer {MCP_TOKEN}",
    "slack_bot_token": SLACK_TOKEN,
}


def connectors(mail: Dovecot, smtp: SmtpSink, crm: FakeCrm, mcp: str, slack: FakeSlack) -> dict[str, Any]:
    imap = {"type": "imap", "host": "127.0.0.1", "port": mail.port, "tls": "none", "user": mail.user}
    return {
        "mail": {**imap, "password": "secret:imap_password"},
        "outbox": {
            "type": "smtp",
            "host": smtp.host,
            "port": smtp.port,
            "tls": "none",
            "user": SMTP_USER,
            "password": "env:AUDIT_SMTP_PASSWORD",
            "from_address": "Support <support@example.com>",
        },
        "crm": {
            "type": "http",
            "base_url": crm.url,
            "auth": {
                "kind": "oauth2_client_credentials",
                "token_url": crm.url + "/oauth/token",
                "client_id": CLIENT_ID,
                "client_secret": "secret:crm_client_secret",
            },
        },
        "tools": {
            "type": "mcp",
            "url": mcp,
            "headers": {"Authorization": "secret:mcp_authorization"},
            "tools": ["create_ticket"],
        },
        "slack": {
            "type": "slack",
            "bot_token": "secret:slack_bot_token",
            "signing_secret": "env:AUDIT_SLACK_SIGNING",
            "channel": "#ops",
            "reviews_channel": "#ops",
            "base_url": slack.url + "/api",
        },
    }


def audit_app(db_url: str, tmp_path: Path, connectors: dict[str, Any], collector: SpanReceiver) -> App:
    sections = {
        "connectors": connectors,
        "triggers": {"inbox": {"connector": "mail", "workflow": "support", "poll_interval": "1s"}},
        "review": {"slack": "slack"},
        "observe": {
            "otlp_endpoint": collector.url,
            "otlp_headers_env": "AUDIT_OTLP_HEADERS",
            "capture_content": True,
            "service_name": "audit",
        },
    }
    settings = Settings(database_url=db_url, project_dir=tmp_path, poll_interval=0.02, sections=sections)
    app = App(settings=settings)

    @app.workflow()
    async def support(ctx: Context, msg: Message) -> dict[str, Any]:
        contact: Contact = await ctx.connector("crm").call(GET_CONTACT, id="7")
        ticket = await (await ctx.connector("tools").load()).call("create_ticket", title=msg.subject)
        await ctx.connector("slack").call("post_message", text=f"Ticket {ticket['id']} for {contact.name}")
        reply = f"Dear {contact.name}, ticket {ticket['id']} is open."
        decision = await ctx.approve("send reply", preview={"text": reply}, risk="high")
        if not decision.approved:
            return {"sent": False}
        to = parseaddr(msg.sender or "")[1]
        await ctx.connector("outbox").call("send", to=[to], text=reply, reply_to=msg)
        return {"sent": True, "ticket": ticket["id"], "by": decision.decided_by}

    return app


async def test_a_run_through_every_connector_leaves_no_secret_in_logs_tables_or_spans(
    db_url: str,
    tmp_path: Path,
    dovecot: Dovecot,
    smtp_auth_server: SmtpSink,
    crm: FakeCrm,
    mcp_url: str,
    slack: FakeSlack,
    collector: SpanReceiver,
    environment: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _mcp_server.CREATED.clear()
    table = connectors(dovecot, smtp_auth_server, crm, mcp_url, slack)
    app = audit_app(db_url, tmp_path, table, collector)
    store = SecretStore(app.db, secrets_key(app.settings, os.environ))
    for name, value in STORED.items():
        await store.set(name, value)

    dovecot.append(message("Printer on fire", "It is on fire.", sender="Grace <grace@customer.example>"))
    with serving(app) as url:
        api = Api(app, url)
        operator = api.key("operator")
        [review] = _until(lambda: api.http.get("/api/v1/reviews").json())
        async with connect(url, operator) as mcp:
            [listed] = ok(await mcp.call_tool("list_reviews", {}))["reviews"]
            assert listed["id"] == review["id"]
            answer = slack.click(
                hook(api), SLACK_SIGNING, posted(slack, review["id"]), "crewline_approve", user=ANA
            )
            assert answer.status_code == 200, answer.text
            run = api.wait_status(review["run_id"], "completed", "failed")
            assert run["status"] == "completed", run.get("error")
            assert ok(await mcp.call_tool("get_run", {"run_id": run["id"]}))["status"] == "completed"
    await app.aclose()  # the span queue is flushed

    _every_connector_was_used(run, crm, slack, smtp_auth_server, collector)
    places = {"logs": logged(caplog), "database": stored_at(db_url), "spans": exported(collector.spans)}
    # The scan sees what the run did, so a secret written beside it would be found.
    assert "Printer on fire" in places["database"] and "Printer on fire" in places["logs"]
    steps = ["crm.get_contact", "tools.create_ticket", "slack.post_message", "outbox.send"]
    assert all(f"step {name}" in places["spans"] for name in steps), places["spans"]
    assert leaks({"subject": "Printer on fire"}, **places) == ["subject in logs", "subject in database"]
    secrets = {**STORED, **_given_or_issued(crm), "operator key": operator, "admin key": api.admin}
    assert leaks(secrets, **places) == []


def _every_connector_was_used(
    run: dict[str, Any], crm: FakeCrm, slack: FakeSlack, smtp: SmtpSink, collector: SpanReceiver
) -> None:
    """Each remote side saw the call it should have, made with the credential its reference named."""
    assert run["output"] == {"sent": True, "ticket": "T-1", "by": "ana (Slack U0ANA)"}
    assert _mcp_server.CREATED == ["Printer on fire"]
    assert crm.grants == ["client_credentials"] and crm.unauthorized == 0
    assert any("T-1 for Grace" in m["text"] for m in slack.messages)
    [sent] = smtp.messages
    assert sent["Subject"] == "Re: Printer on fire" and "ticket T-1 is open" in sent.get_content()
    assert collector.headers and all(h.get("x-api-key") == COLLECTOR_KEY for h in collector.headers)


def _given_or_issued(crm: FakeCrm) -> dict[str, str]:
    """The secrets given through ``env:`` or to the fakes, and the access tokens the CRM issued."""
    issued = sorted(crm.valid - {STATIC_TOKEN})
    assert issued
    return {
        "mcp bearer token": MCP_TOKEN,
        "smtp password": SMTP_PASSWORD,
        "slack signing secret": SLACK_SIGNING,
        "secrets key": KEY,
        "collector key": COLLECTOR_KEY,
        **{f"crm access token {i}": token for i, token in enumerate(issued)},
    }


def _until(read: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := read()):
        assert time.monotonic() < deadline, "nothing came"
        time.sleep(0.05)
    return found
