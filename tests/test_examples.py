"""The example project end to end on a fake model: prompts, budgets, approvals, escalation."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App
from crewline.models import Gateway, ModelsConfig
from crewline.testing import FakeProvider
from tests.flows._drive import drive, step_once

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


@pytest.fixture
async def example(db_url: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    project = tmp_path / "project"
    project.mkdir()
    (project / "prompts").symlink_to(ROOT / "examples" / "prompts")
    (project / "crewline.toml").write_text((ROOT / "examples" / "crewline.toml").read_text())
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
        {"sender": "ada@example.com", "subject": "Charged twice", "body": "I was charged twice this month."},
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


async def drive_until_waiting(app: App, rid: str) -> Any:
    for i in range(10):
        await step_once(app, f"w{i}")
        run = await app.get_run(rid)
        if run.status == "waiting":
            return run
    raise AssertionError("the run never parked")
