"""The Slack connector against the fake Slack: posts and updates from a workflow as durable steps (a crash
after the post does not post twice), Slack's refusals as connector errors naming what to check and never
the token, rate limits waited out, and the v0 signature check."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context, Settings
from crewline.connectors.registry import connectors_problems
from crewline.connectors.slack import SlackConnector, verify_slack_signature
from crewline.errors import ConnectorAuthError, ConnectorRateLimited, ConnectorRejected
from crewline.secret_store import Credentials
from crewline.signing import SignatureError
from crewline.testing.fake_slack import FakeSlack, sign_slack

from .._leaks import logged, stored
from ..flows._drive import CrashPlan, drive, expire_leases, step_once

TOKEN = "xoxb-test-secret-77aa"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    with FakeSlack(token=TOKEN, channels={"#ops": "C0OPS"}) as fake:
        yield fake


def make_app(db_url: str, slack: FakeSlack, **connector: Any) -> App:
    table = {
        "type": "slack",
        "bot_token": "env:TEST_SLACK_TOKEN",
        "channel": "#ops",
        "base_url": slack.url + "/api",
        **connector,
    }
    app = App(db_url, settings=Settings(sections={"connectors": {"slack": table}}))

    @app.workflow()
    async def announce(ctx: Context, text: str) -> dict[str, Any]:
        posted = await ctx.connector("slack").call("post_message", text=text)
        await ctx.connector("slack").call(
            "update_message", channel=posted.channel, ts=posted.ts, text=text + " (done)"
        )
        return {"channel": posted.channel, "ts": posted.ts}

    return app


async def test_a_post_from_a_workflow_happens_once_across_a_crash(
    db_url: str, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(db_url, slack)
    try:
        app.engine.crash_hook = CrashPlan([("after_step_commit", 1)])
        rid = await app.start("announce", "deploy finished")
        assert await step_once(app, "w1") == ["crashed"]
        await expire_leases(app)
        run = await drive(app, rid)
        [message] = slack.messages
        assert run.output == {"channel": "C0OPS", "ts": message["ts"]}
        assert message["text"] == "deploy finished (done)"
        assert len(slack.calls_to("chat.postMessage")) == 1
        steps = await app.steps(rid)
        assert [(s.name, s.effect) for s in steps] == [
            ("slack.post_message", "irreversible"),
            ("slack.update_message", "idempotent"),
        ]
        key = slack.calls_to("chat.postMessage")[0].args["metadata"]["event_payload"]["key"]
        assert key and await app.engine.connectors.get("slack").find_posted(key) is not None  # type: ignore[attr-defined]
        assert TOKEN not in stored(app.db) and TOKEN not in logged(caplog)
    finally:
        await app.aclose()


async def test_refusals_name_the_connector_and_what_to_check(db_url: str, slack: FakeSlack) -> None:
    app = make_app(db_url, slack)
    try:
        connector = app.engine.connectors.get("slack")
        assert isinstance(connector, SlackConnector)
        with pytest.raises(ConnectorRejected, match=r"channel_not_found.*check the channel") as missing:
            await connector.post_message("x", channel="#nowhere")
        assert "'slack'" in str(missing.value)
        slack.token = "xoxb-rotated"
        with pytest.raises(ConnectorAuthError, match=r"bot_token of \[connectors.slack\]") as refused:
            await connector.post_message("x")
        assert TOKEN not in str(refused.value) and TOKEN not in repr(refused.value)
        assert slack.messages == []
    finally:
        await app.aclose()


async def test_rate_limits_are_waited_out_then_raised(db_url: str, slack: FakeSlack) -> None:
    app = make_app(db_url, slack, max_retries=2)
    try:
        connector = app.engine.connectors.get("slack")
        assert isinstance(connector, SlackConnector)
        slack.rate_limit(times=2, retry_after=0)
        posted = await connector.post_message("after two 429s")
        assert [c.answered for c in slack.calls] == [429, 429, 200] and posted.channel == "C0OPS"
        slack.rate_limit(times=3, retry_after=0)
        with pytest.raises(ConnectorRateLimited) as limited:
            await connector.post_message("gives up")
        assert limited.value.retryable and limited.value.retry_after == 0
    finally:
        await app.aclose()


def test_config_check_reports_bad_sections_without_values() -> None:
    credentials = Credentials(None, None, {})
    problems = connectors_problems(
        {"slack": {"type": "slack", "bot_token": "xoxb-pasted-value", "timeout": -1}}, credentials
    )
    joined = "\n".join(problems)
    assert "[connectors.slack]" in joined and "bot_token" in joined and "timeout" in joined
    assert "xoxb-pasted-value" not in joined
    unset = connectors_problems({"slack": {"type": "slack", "bot_token": "env:NOPE_TOKEN"}}, credentials)
    assert any("NOPE_TOKEN is not set" in p for p in unset)


def test_the_v0_signature_check() -> None:
    body = b"payload=%7B%7D"
    now = int(time.time())
    headers = sign_slack("sec", body, timestamp=now)
    ts, sig = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    assert verify_slack_signature("sec", body, ts, sig) == sig
    for secret, raw, stamp, why in [
        ("other", body, ts, "does not match"),
        ("sec", body + b"x", ts, "does not match"),
        ("sec", body, str(now - 301), "old"),
        ("sec", body, None, "missing X-Slack-Request-Timestamp"),
        ("sec", body, "soon", "Unix seconds"),
    ]:
        with pytest.raises(SignatureError, match=why):
            verify_slack_signature(secret, raw, stamp, sig)
