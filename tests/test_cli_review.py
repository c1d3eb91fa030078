"""`crewline review` end to end: a run parked in-process, the decision taken by the real command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import App, Context, Settings

from .flows._drive import drive, step_once
from .test_cli import cli  # noqa: F401  (the fixture)


class Email(BaseModel):
    sender: str
    subject: str
    body: str


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    a = App(settings=Settings().with_(database_url=sqlite_url))

    @a.workflow()
    async def answer(ctx: Context, email: Email) -> Any:
        draft = f"Dear {email.sender},\nyour refund is on its way."
        decision = await ctx.approve("send reply", preview=draft)
        return decision.edited or draft

    @a.workflow()
    async def refund(ctx: Context, amount: int) -> Any:
        decision = await ctx.approve("refund order", preview={"amount": amount})
        return decision.edited

    yield a
    a.close()


async def parked(app: App, workflow: str, payload: Any) -> tuple[str, str]:
    rid = await app.start(workflow, payload)
    assert await step_once(app, "w1") == ["parked"]
    [req] = await app.reviews.list(run_id=rid)
    return rid, req.id


EMAIL = {"sender": "Ada", "subject": "Refund?", "body": "Where is my refund?\nOrder 42."}


async def test_show_has_the_runs_input_and_text_as_text(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, req = await parked(app, "answer", EMAIL)
    shown = cli("review", "show", req).stdout
    assert (
        "input:\n  sender: Ada\n  subject: Refund?\n  body:\n    Where is my refund?\n    Order 42.\n"
        in shown
    )
    assert "preview:\n  Dear Ada,\n  your refund is on its way.\n" in shown
    assert "\\n" not in shown
    assert json.loads(cli("review", "show", req, "--json").stdout)["preview"].startswith("Dear Ada,\n")


async def test_a_text_preview_takes_plain_text_inline_or_from_a_file(app: App, cli, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid, req = await parked(app, "answer", EMAIL)
    done = cli("review", "approve", req, "--edit", "Hi Ada, refunded today.")
    assert done.stdout.strip().endswith(f"run {rid} resumes")
    assert (await drive(app, rid)).output == "Hi Ada, refunded today."

    rid, req = await parked(app, "answer", EMAIL)
    (tmp_path / "reply.txt").write_text('Hi Ada,\n"refunded" today.\n')
    cli("review", "approve", req, "--edit", "@reply.txt")
    assert (await drive(app, rid)).output == 'Hi Ada,\n"refunded" today.'


async def test_a_json_preview_takes_json_and_says_so_otherwise(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid, req = await parked(app, "refund", 50)
    bad = cli("review", "approve", req, "--edit", "forty", check=2)
    assert "--edit is not valid JSON" in bad.stderr and "the preview is a JSON object" in bad.stderr
    assert "Traceback" not in bad.stderr and (await app.reviews.get(req)).status == "pending"
    cli("review", "approve", req, "--edit", '{"amount": 40}')
    assert (await drive(app, rid)).output == {"amount": 40}


async def test_a_decision_on_a_cancelled_run_is_refused(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rid, req = await parked(app, "refund", 5)
    assert cli("runs", "cancel", rid).stdout.strip() == "cancelled"
    refused = cli("review", "approve", req, check=2)
    assert f"run {rid} was cancelled: request {req} can no longer be decided" in refused.stderr
    assert "resumes" not in refused.stdout
    assert "closed" in cli("review", "list", "--status", "closed").stdout
