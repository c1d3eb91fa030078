"""Alerts that reach a person: rules evaluated once across workers, notices delivered once, bad config refused."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewline import App
from crewline.cli.config import check_project
from crewline.config import Settings
from crewline.errors import BudgetExceeded, ConfigError, ProviderUnavailable
from crewline.memory.retrieval import SearchLog, log_search
from crewline.models.ledger import BudgetAlert
from crewline.observe.alert_config import WEEK, AlertsConfig
from crewline.observe.alerts import Alerting, list_history
from crewline.observe.events import Event
from crewline.testing import FakeProvider, Fault

from ._receivers import http_receiver, smtp_server

ROOT = Path(__file__).resolve().parents[2]


def _models(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"}},
        "prices": {"fake/mid": {"input": 0.0, "output": 1000.0}},  # $0.001 per output token
        "retry": {"attempts": 1},
        **extra,
    }


async def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


# -- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "env", "named"),
    [
        ({"errs": {"what": "error_rates", "threshold": 0.5}}, {}, "[alerts.errs] what = 'error_rates'"),
        ({"errs": {"what": "error_rate", "threshold": "high"}}, {}, "[alerts.errs] threshold = 'high'"),
        ({"errs": {"what": "error_rate"}}, {}, "[alerts.errs] threshold is missing"),
        ({"errs": {"what": "error_rate", "threshold": 1, "treshold": 2}}, {}, "did you mean 'threshold'"),
        ({"errs": {"what": "error_rate", "threshold": 1, "channels": ["ops"]}}, {}, "no channel 'ops'"),
        ({"errs": {"what": "error_rate", "threshold": 1, "min_calls": 0}}, {}, "[alerts.errs] min_calls = 0"),
        ({"r": {"what": "retrieval_drop", "threshold": 1.5}}, {}, "[alerts.r] threshold = 1.5"),
        ({"r": {"what": "retrieval_drop", "threshold": 0}}, {}, "[alerts.r] threshold = 0 is not valid"),
        ({"r": {"what": "retrieval_drop", "threshold": 0.2, "window": "8d"}}, {}, "[alerts.r] window = '8d'"),
        ({"r": {"what": "retrieval_drop", "threshold": 0.2, "min_calls": 0}}, {}, "[alerts.r] min_calls"),
        ({"r": {"what": "retrieval_drop", "threshold": 0.2, "scope": 3}}, {}, "[alerts.r] scope = 3"),
        ({"channels": {"ops": {"type": "slack", "url": "https://x"}}}, {}, "secrets never go in the file"),
        ({"channels": {"ops": {"type": "slack", "url_env": "NOPE"}}}, {}, "variable NOPE is not set"),
        ({"channels": {"ops": {"type": "teams"}}}, {}, "[alerts.channels.ops] type = 'teams'"),
        ({"channels": {"m": {"type": "email", "from": "a@b.c", "to": "x"}}}, {}, "[alerts.channels.m] to"),
        (
            {"channels": {"w": {"type": "webhook", "url_env": "U"}}},
            {"U": "https://x"},
            "secret_env is missing",
        ),
    ],
)
def test_an_invalid_rule_or_channel_is_a_config_error_naming_it(
    table: dict[str, Any], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as e:
        AlertsConfig.parse(table, env)
    assert named in str(e.value)


def test_config_check_reports_the_alerts_section_and_never_the_secret(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(
        '[alerts.channels.ops]\ntype = "slack"\nurl_env = "OPS_URL"\n'
        '[alerts.errs]\nwhat = "error_rate"\nthreshold = 2.5\nwindow = "soon"\nchannels = ["ops"]\n'
    )
    env = {"CREWLINE_PROJECT": str(tmp_path), "OPS_URL": "https://hooks.example.com/T0/SECRET"}
    report = check_project(env)
    assert report.errors == [
        "[alerts.errs] window = 'soon' is not valid: cannot read duration 'soon': "
        "use a number of seconds or a number with ms, s, m, h, d or w"
    ]
    assert "SECRET" not in "\n".join(report.lines())
    (tmp_path / "crewline.toml").write_text('[alerts.channels.ops]\ntype = "slack"\nurl_env = "OPS_URL"\n')
    assert check_project(env).errors == []


# -- budgets ------------------------------------------------------------------------------------------


async def test_a_budget_crossing_alerts_once_per_level(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeProvider(api_key="sk-test") as fake, http_receiver() as slack:
        monkeypatch.setenv("SLACK_URL", slack.url)
        sections = {
            "models": _models(fake.url, max_tokens=5, budgets={"day": 0.025}),
            "alerts": {
                "spend": {"what": "budget", "channels": ["ops"]},
                "channels": {"ops": {"type": "slack", "url_env": "SLACK_URL"}},
            },
        }
        app = App(settings=Settings(database_url=db_url, sections=sections))
        events: list[Event] = []
        app.observers.add(type("Seen", (), {"observe": lambda self, e: events.append(e)})())
        try:
            for _ in range(5):  # $0.005 each: 20%, 40%, 60%, 80%, 100% of $0.025
                fake.reply("ok", input_tokens=3, output_tokens=5)
                await app.models.complete("fake/mid", "hi")
            with pytest.raises(BudgetExceeded):
                await app.models.complete("fake/mid", "hi")
            await app.models.aclose()  # the call records, and with them the crossings, are written
            await _wait_for(lambda: len(app.alerting._writes) == 0)
            for crossing in [(50, 0.015), (80, 0.02)]:  # another process seeing the same crossings
                day = next(iter(app.models.ledger.scopes(None)))
                await app.alerting.record_budget(BudgetAlert(day, crossing[0], 0.025, crossing[1]))
            async with httpx.AsyncClient() as client:
                assert await app.alerting.deliver(client) == 3
                assert await app.alerting.deliver(client) == 0
            history = await app.db.read(lambda conn: list_history(conn))
        finally:
            await app.aclose()
    levels = sorted(int(h.summary.split(" reached ")[1].split("%")[0]) for h in history)
    assert levels == [50, 80, 100]
    assert all(h.rule == "spend" and h.delivered == 1 for h in history)
    assert sorted(b["text"].split(" reached ")[1].split("%")[0] for b in slack.bodies) == ["100", "50", "80"]
    assert "/api/v1/budgets" in slack.bodies[0]["text"] and slack.bodies[0]["blocks"]
    assert [e.state for e in events if type(e).__name__ == "AlertEvent"] == ["firing"] * 3


# -- retrieval ----------------------------------------------------------------------------------------


def _searches(at: float, scope: str, hits: list[int]) -> list[SearchLog]:
    return [SearchLog(at, (scope, "global"), 5, n, 0.8 if n else None) for n in hits]


async def test_a_retrieval_drop_against_last_week_fires_once_then_resolves(db_url: str) -> None:
    now = time.time()
    offset = [0.0]
    logged = [
        *_searches(now - WEEK - 1800, "customer:1", [3] * 18 + [0] * 2),  # last week: 90%
        *_searches(now - 1800, "customer:2", [2] * 6 + [0] * 14),  # now: 30%
        *_searches(now - 1800, "other", [4] * 40),  # another scope doing well: filtered out
        *_searches(now - WEEK - 60, "tiny:1", [1] * 3),  # too few searches to judge
        *_searches(now - 60, "tiny:1", [0] * 3),
        *_searches(now - WEEK - 7200, "customer:1", [0] * 50),  # outside last week's window
    ]
    table = {
        "recall": {"what": "retrieval_drop", "window": "1h", "threshold": 0.2, "scope": "customer:"},
        "tiny": {"what": "retrieval_drop", "window": "1h", "threshold": 0.2, "scope": "tiny:"},
    }
    app = App(db_url)
    alerting = Alerting(app.db, AlertsConfig.parse(table, {}), clock=lambda: now + offset[0])
    try:
        await app.db.write(lambda conn: [log_search(conn, entry) for entry in logged])
        [fired] = await alerting.evaluate()
        offset[0] += 60
        assert await alerting.evaluate() == []  # still firing: no second notice
        recovered = _searches(now - 600, "customer:3", [1] * 40)  # 46 of 60: 77%, 13 points down
        await app.db.write(lambda conn: [log_search(conn, entry) for entry in recovered])
        offset[0] += 60
        [resolved] = await alerting.evaluate()
        history = await app.db.read(lambda conn: list_history(conn))
    finally:
        await app.aclose()
    assert (fired.rule, fired.state, resolved.rule, resolved.state) == (
        "recall",
        "firing",
        "recall",
        "resolved",
    )
    assert fired.summary == (
        "memory search hit rate for scopes customer:* was 30% (6 of 20 searches, mean top score 0.800) "
        "in the last 1.0h, against 90% (18 of 20 searches, mean top score 0.800) in the same window a week "
        "earlier (threshold: a drop of 20%, at least 10 searches in each window)"
    )
    assert fired.value == pytest.approx(0.6) and fired.link == "/api/v1/stats?since=8d&by=day"
    assert "77% (46 of 60 searches" in resolved.summary
    assert [(h.rule, h.state) for h in history] == [("recall", "resolved"), ("recall", "firing")]


# -- delivery -----------------------------------------------------------------------------------------


async def test_a_channel_down_then_up_delivers_the_notice_once(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    offset = [0.0]
    with http_receiver(down=2) as slack:
        table = {
            "backlog": {"what": "queue_backlog", "threshold": 1, "channels": ["ops"]},
            "channels": {"ops": {"type": "slack", "url_env": "SLACK_URL"}},
        }
        app = App(db_url)

        @app.workflow()
        async def idle(ctx: Any) -> None:
            return None

        await app.start(idle)  # pending, and no worker: the queue backs up
        config = AlertsConfig.parse(table, {"SLACK_URL": slack.url})
        alerting = Alerting(
            app.db, config, public_url="https://ops.example.com/", clock=lambda: time.time() + offset[0]
        )
        try:
            assert [n.state for n in await alerting.evaluate()] == ["firing"]
            assert await alerting.evaluate() == []  # not due again yet
            async with httpx.AsyncClient() as client:
                with caplog.at_level(logging.WARNING, "crewline.alerts"):
                    assert await alerting.deliver(client) == 0  # 503
                    offset[0] += 1.5
                    assert await alerting.deliver(client) == 0  # 503 again
                    assert await alerting.deliver(client) == 0  # backing off: not due yet
                    offset[0] += 2.5
                    assert await alerting.deliver(client) == 1
                    offset[0] += 1000
                    assert await alerting.deliver(client) == 0
            history = await app.db.read(lambda conn: list_history(conn))
        finally:
            await app.aclose()
    assert slack.attempts == 3 and len(slack.bodies) == 1
    assert "https://ops.example.com/api/v1/runs?state=pending" in slack.bodies[0]["text"]
    assert "1 run(s) due" in slack.bodies[0]["text"]
    assert [(h.state, h.delivered, h.pending) for h in history] == [("firing", 1, 0)]
    assert "HTTP 503" in caplog.text and slack.url not in caplog.text


async def test_alerts_test_sends_a_sample_through_a_signed_webhook(sqlite_url: str) -> None:
    from crewline.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

    with http_receiver() as hook:
        table = {"channels": {"hook": {"type": "webhook", "url_env": "U", "secret_env": "S"}}}
        app = App(sqlite_url)
        alerting = Alerting(app.db, AlertsConfig.parse(table, {"U": hook.url, "S": "s3cret"}))
        async with httpx.AsyncClient() as client:
            await alerting.test("hook", client)
        app.close()
    headers = {k.lower(): v for k, v in hook.headers[0].items()}
    assert hook.bodies[0]["state"] == "test"
    signed = (headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    assert verify(b"s3cret", hook.raw[0], *signed, tolerance=60).startswith("sha256=")


# -- once across processes ----------------------------------------------------------------------------


def _project(tmp_path: Path, fake_url: str, smtp_port: int) -> None:
    (tmp_path / "crewline.toml").write_text(
        f"""
[models]
retry = {{ attempts = 1 }}
[models.providers.fake]
format = "openai"
base_url = "{fake_url}/v1"
api_key_env = "FAKE_KEY"
[models.prices]
"fake/mid" = {{ input = 0.0, output = 0.0 }}

[alerts]
interval = "0.2s"
[alerts.model_errors]
what = "error_rate"
window = "1h"
threshold = 0.5
min_calls = 3
model = "fake/mid"
channels = ["ops", "mail"]
cooldown = "1h"
[alerts.channels.ops]
type = "slack"
url_env = "SLACK_URL"
[alerts.channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
from = "crewline@example.com"
to = ["me@example.com"]
"""
    )


async def test_an_error_rate_alert_reaches_slack_and_email_once_per_episode_with_two_workers(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeProvider(api_key="sk-test") as fake, http_receiver() as slack, smtp_server() as (mailbox, port):
        _project(tmp_path, fake.url, port)
        env = {
            **os.environ,
            "CREWLINE_PROJECT": str(tmp_path),
            "CREWLINE_DATABASE_URL": pg_url,
            "FAKE_KEY": "sk-test",
            "SLACK_URL": slack.url,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
        for name in ("CREWLINE_PROJECT", "FAKE_KEY", "SLACK_URL"):
            monkeypatch.setenv(name, env[name])
        app = App(settings=Settings.load(tmp_path).with_(database_url=pg_url))
        app.db.query(lambda conn: None)  # migrated before the workers start
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "crewline", "worker"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            fake.fault(Fault.http(500, times=4))
            for _ in range(5):  # 4 failures, 1 success: 80% of 5 calls
                with contextlib.suppress(ProviderUnavailable):
                    await app.models.complete("fake/mid", "hi")
            await app.models.aclose()
            await _wait_for(lambda: len(slack.bodies) == 1 and len(mailbox.messages) == 1)
            await app.aclose()
            app = App(settings=Settings.load(tmp_path).with_(database_url=pg_url))  # its breaker closed again
            for _ in range(10):  # 4 of 15 calls failed: below 50%, the episode ends
                await app.models.complete("fake/mid", "hi")
            await app.models.aclose()
            await _wait_for(lambda: len(slack.bodies) == 2 and len(mailbox.messages) == 2)
            await asyncio.sleep(1.5)  # several more ticks of both workers: nothing more is sent
            history = await app.db.read(lambda conn: list_history(conn))
        finally:
            for w in workers:
                w.terminate()
            errors = [w.communicate(timeout=30)[1].decode() for w in workers]
            await app.aclose()
    assert len(slack.bodies) == 2 and len(mailbox.messages) == 2
    assert (
        "FIRING: model_errors" in slack.bodies[0]["text"] and "4 of 5 model calls" in slack.bodies[0]["text"]
    )
    assert "resolved: model_errors" in slack.bodies[1]["text"]
    mails = [email.message_from_string(m, policy=email.policy.default) for m in mailbox.messages]
    assert [m["Subject"] for m in mails] == [
        "[crewline] FIRING: model_errors",
        "[crewline] resolved: model_errors",
    ]
    assert "See /api/v1/calls?status=error" in mails[0].get_body().get_content()  # type: ignore[union-attr]
    assert [(h.state, h.delivered) for h in history] == [("resolved", 2), ("firing", 2)]
    assert all(slack.url not in e for e in errors)
