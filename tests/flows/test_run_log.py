"""The log says what runs do: one line per state change, with no payloads in it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crewline import App, Context, RetryPolicy

from ._drive import drive, step_once

SECRET_INPUT = "card 4242-4242-4242-4242"


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)

    async def charge(card: str) -> None:
        raise RuntimeError("card declined by the bank")

    @a.workflow()
    async def pay(ctx: Context, card: str) -> None:
        await ctx.step(charge, card, retry=RetryPolicy(max_attempts=1))

    @a.workflow()
    async def reply(ctx: Context, text: str) -> str:
        decision = await ctx.approve("send reply", preview=text)
        return str(decision.edited or text)

    yield a
    a.close()


def run_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crewline.runs"]


async def test_each_state_change_is_one_line(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="crewline.runs")
    waiting = await app.start("reply", SECRET_INPUT)
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    await app.reviews.approve(req.id, by="sam")
    await drive(app, waiting)
    failing = await app.start("pay", SECRET_INPUT)
    await drive(app, failing)
    cancelled = await app.start("reply", SECRET_INPUT)
    await step_once(app, "w2")
    await app.cancel(cancelled)
    lines = run_lines(caplog)
    assert lines[:3] == [
        f"run {waiting} (reply) started",
        f"run {waiting} (reply) waiting for review {req.id}",
        f"run {waiting} (reply) resumed",
    ]
    assert lines[3].startswith(f"run {waiting} (reply) completed in ")
    assert lines[4:] == [
        f"run {failing} (pay) started",
        f"run {failing} (pay) failed at step 1: RuntimeError: card declined by the bank",
        f"run {cancelled} (reply) started",
        f"run {cancelled} (reply) waiting for review {cancelled}:1",
        f"run {cancelled} (reply) cancelled",
    ]
    assert not any("4242" in r.getMessage() for r in caplog.records)
