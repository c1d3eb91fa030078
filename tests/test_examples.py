"""The example project end to end on a fake model: prompts, budgets, approvals, escalation."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App
from crewline.models import Gateway, ModelsConfig
from crewline.testing import FakeProvider
from tests._leaks import stored_at
from tests.connectors._crm import STATIC_TOKEN, FakeCrm, serving_crm
from tests.connectors.mail_servers import PASSWORD, Dovecot, SmtpSink, dovecot, message, smtp_server
from tests.flows._drive import drive, step_once

__all__ = ["dovecot", "smtp_server"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


ADA = {
    "id": 42,
    "properties": {"full_name": "Ada Lovelace", "email": "ada@example.com"},
    "company": {"name": "Analytical Engines"},
}


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    with serving_crm(FakeCrm(contacts={"42": ADA})) as server:
        yield server


@pytest.fixture
async def example(
    db_url: str,
    fake: FakeProvider,
    crm: FakeCrm,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mail_config: str,
) -> Any:
    project = tmp_path / "project"
    project.mkdir()
    (project / "prompts").symlink_to(ROOT / "examples" / "prompts")
    # The example's CRM is the loopback one here, behind a bearer token from the environment.
    toml = (ROOT / "examples" / "crewline.toml").read_text()
    toml = toml.replace('base_url = "http://127.0.0.1:8765/api"', f'base_url = "{crm.url}"')
    toml += 'auth = { kind = "bearer", token = "env:CRM_TOKEN" }\n' + mail_config
    (project / "crewline.toml").write_text(toml)
    monkeypatch.setenv("CRM_TOKEN", STATIC_TOKEN)
    monkeypatch.setenv("CREWLINE_PROJECT_DIR", str(project))
    monkeypatch.setenv("CREWLINE_DATABASE_URL", db_url)
    sys.modules.pop("examples.app", None)
    module = importlib.import_module("examples.app")
    app: App = module.app
    table = {
        "providers": {"fake": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}},
        "tiers": {
            "order": ["local", "cheap", "strong"],
            "local": "fake/small",
            "cheap": "fake/mid",
            "strong": "fake/big",
        },
        "prices": {
            "fake/small": {"input": 0, "output": 0},
            "fake/mid": {"input": 0.15, "output": 0.6},
            "fake/big": {"input": 3, "output": 15},
        },
        "retry": {"attempts": 1},
    }
    app.engine.models = Gateway(ModelsConfig.parse(table), app.db, environ={"FAKE_KEY": "sk-test"})
    yield module
    await app.aclose()
    sys.modules.pop("examples.app", None)


async def test_inbox_triage_asks_before_replying_and_sends_the_edit(example: Any, fake: FakeProvider) -> None:
    app: App = example.app
    fake.reply(json={"category": "billing", "urgency": "high", "summary": "double charge"})
    fake.reply("Sorry about the double charge; we are looking into it. The team")
    rid = await app.start(
        "triage_email",
        {"sender": "ada@example.com", "subject": "Charged twice", "text": "I was charged twice this month."},
    )
    assert (await drive_until_waiting(app, rid)).wait_reason.startswith("approval:")
    [req] = await app.reviews.list()
    assert req.risk == "high" and req.action == "send reply"
    assert [u["prompt"].split("@")[0] for u in req.context["used"]] == ["triage", "reply"]
    assert "I was charged twice" in str(fake.requests[0].body["messages"])
    await app.reviews.approve(req.id, by="owner", edit="We refunded the second charge today. The team")
    run = await drive(app, rid)
    assert run.output == {"category": "billing", "action": "replied"}
    sent = list((Path(app.settings.project_dir) / ".crewline" / "outbox").glob("*.json"))
    assert len(sent) == 1 and "refunded the second charge" in sent[0].read_text()
    assert [r.body["model"] for r in fake.requests] == ["mid", "big"]


async def test_ticket_summary_escalates_when_the_cheap_model_fails_validation(
    example: Any, fake: FakeProvider
) -> None:
    app: App = example.app
    fake.reply(json={"summary": "x", "next_step": "y", "confidence": 7})  # out of range, then the re-ask:
    fake.reply(json={"summary": "x", "next_step": "y", "confidence": 9})
    fake.reply(json={"summary": "Refund asked twice", "next_step": "Refund", "confidence": 0.9})
    rid = await app.start("summarize_ticket", {"id": "T-1", "title": "Refund", "messages": ["Refund please"]})
    run = await drive(app, rid)
    assert run.output["next_step"] == "Refund"
    assert [r.body["model"] for r in fake.requests] == ["mid", "mid", "big"]


async def test_lead_followup_reads_the_contact_from_the_crm_and_notes_what_was_sent(
    example: Any, fake: FakeProvider, crm: FakeCrm, db_url: str
) -> None:
    app: App = example.app
    fake.reply("Hi Ada, following up on the team plan. Would a call on Thursday suit you?")
    rid = await app.start("lead_followup", {"contact_id": "42", "interest": "the team plan"})
    assert (await drive_until_waiting(app, rid)).wait_reason.startswith("approval:")
    [req] = await app.reviews.list()
    assert req.action == "send follow-up to Ada Lovelace"
    asked = str(fake.requests[0].body["messages"])
    assert "Ada Lovelace at Analytical Engines" in asked and "the team plan" in asked
    await app.reviews.approve(req.id, by="owner")
    run = await drive(app, rid)
    assert run.output == {"lead": "ada@example.com", "action": "sent"}
    sent = list((Path(app.settings.project_dir) / ".crewline" / "outbox").glob("*.json"))
    assert len(sent) == 1 and "ada@example.com" in sent[0].read_text()
    steps = await app.steps(rid)
    assert [(s.kind, s.name) for s in steps] == [
        ("step", "crm.get_contact"),
        ("llm", "llm:followup"),
        ("approval", "send follow-up to Ada Lovelace"),
        ("step", "send_email"),
        ("step", "crm.add_note"),
    ]
    [note] = crm.notes.values()
    assert note["text"] == "Sent: Following up on the team plan"
    assert crm.note_requests == [steps[-1].input["idempotency_key"]]
    await app.aclose()
    assert STATIC_TOKEN not in stored_at(db_url)


async def drive_until_waiting(app: App, rid: str) -> Any:
    for i in range(10):
        await step_once(app, f"w{i}")
        run = await app.get_run(rid)
        if run.status == "waiting":
            return run
    raise AssertionError("the run never parked")


@pytest.fixture
def mail_config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Nothing, or (parametrized with "mail") sections for a real mailbox (Dovecot) and SMTP server."""
    if getattr(request, "param", None) != "mail":
        return ""
    imap: Dovecot = request.getfixturevalue("dovecot")
    smtp: SmtpSink = request.getfixturevalue("smtp_server")
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    return (
        f'\n[connectors.mail]\ntype = "imap"\nhost = "127.0.0.1"\nport = {imap.port}\ntls = "none"\n'
        f'user = "{imap.user}"\npassword = "env:TEST_IMAP_PASSWORD"\n'
        f'\n[connectors.outbox]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {smtp.port}\n'
        'tls = "none"\nfrom_address = "Support <support@example.com>"\nsent = "mail"\n'
        '\n[triggers.inbox]\nconnector = "mail"\nworkflow = "triage_email"\npoll_interval = "1s"\n'
    )


@pytest.mark.parametrize("mail_config", ["mail"], indirect=True)
async def test_an_email_in_the_inbox_is_triaged_approved_and_answered_over_smtp(
    example: Any, fake: FakeProvider, dovecot: Dovecot, smtp_server: SmtpSink
) -> None:
    app: App = example.app
    fake.reply(json={"category": "billing", "urgency": "high", "summary": "double charge"})
    fake.reply("Sorry about the double charge. The team")
    grace = "Grace <grace@customer.example>"
    text = "I was charged twice this month."
    dovecot.append(message("Charged twice", text, sender=grace, message_id="<q1@customer.example>"))
    worker = app.worker(concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        reviews = await _eventually(app.reviews.list)
        [req] = reviews
        assert req.action == "send reply"
        assert smtp_server.deliveries == {}  # nothing goes out before the approval
        await app.reviews.approve(req.id, by="owner", edit="We refunded the second charge today. The team")
        output = await app.result(req.run_id, timeout=120)
    finally:
        worker.stop()
        await task
    assert output == {"category": "billing", "action": "replied"}
    [sent] = smtp_server.messages
    assert list(smtp_server.deliveries.values()) == [1]
    assert sent["To"] == "grace@customer.example" and sent["Subject"] == "Re: Charged twice"
    assert sent["In-Reply-To"] == "<q1@customer.example>"
    assert "refunded the second charge" in sent.get_content()
    assert len(dovecot.search("Sent")) == 1 and dovecot.search("INBOX", "UNSEEN") == []


async def _eventually(read: Callable[[], Awaitable[list[Any]]], timeout: float = 120) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (found := await read()):
        assert time.monotonic() < deadline, "nothing came"
        await asyncio.sleep(0.1)
    return found
