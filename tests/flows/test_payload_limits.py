"""Payloads nested deeper than the store's limit: refused where they enter, never stored, and old ones
that cannot be read back shown as unreadable and failing their run clearly instead of stranding it."""

from __future__ import annotations

from typing import Any

import pytest

from crewline import App, Context, InvalidInput
from crewline.store.payloads import MAX_DEPTH, Unreadable

from ._drive import drive, step_once
from .test_operator import crash_after_intent, invoice_workflow

TOO_DEEP = 230  # deep enough that the JSON reader refuses it


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


async def test_every_python_entrance_refuses_a_payload_nested_too_deep(app: App) -> None:
    invoice_workflow(app)

    @app.workflow()
    async def echo(ctx: Context, data: Any) -> Any:
        return data

    limit = f"nested more than {MAX_DEPTH} levels deep"
    with pytest.raises(InvalidInput, match=f"input is {limit}"):
        await app.start(echo, nested(TOO_DEEP))
    assert await app.list_runs() == []
    rid = await crash_after_intent(app)
    with pytest.raises(InvalidInput, match=f"event payload is {limit}"):
        await app.send_event(rid, "go", {"deep": nested(MAX_DEPTH)})
    with pytest.raises(InvalidInput, match=f"output is {limit}"):
        await app.resolve(rid, 2, "done", nested(TOO_DEEP))
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_reason is not None
    with pytest.raises(InvalidInput, match=f"fork override is {limit}"):
        await app.fork(rid, 1, overrides={"model": nested(MAX_DEPTH + 1)})
    assert len(await app.list_runs()) == 1


async def test_a_step_output_nested_too_deep_fails_that_step_instead_of_being_stored(app: App) -> None:
    async def build() -> Any:
        return nested(TOO_DEEP)

    @app.workflow()
    async def deep(ctx: Context) -> str:
        await ctx.step(build)
        return "unreachable"

    rid = await app.start(deep)
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "InvalidInput" and run.error["step"] == 1
    assert f"nested more than {MAX_DEPTH} levels deep" in run.error["message"]
    assert "in_workflow_code" not in run.error
    [step] = await app.steps(rid)
    assert step.status == "failed" and step.output is None and step.error is not None
    assert step.error["type"] == "InvalidInput"


async def test_a_stored_input_that_cannot_be_read_is_shown_and_fails_its_run(app: App) -> None:
    @app.workflow()
    async def echo(ctx: Context, data: Any) -> Any:
        return data

    bad = await app.start(echo, [1])
    good = await app.start(echo, [2])
    await app.db.write(
        lambda c: c.execute("UPDATE runs SET input = ? WHERE id = ?", (deep_text(TOO_DEEP), bad))
    )
    run = await app.get_run(bad)
    assert isinstance(run.input, Unreadable) and "cannot be read" in run.input["unreadable"]
    assert sorted(await step_once(app, "w1")) == ["completed", "failed"]  # one bad run blocks no other
    failed = await app.get_run(bad)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["type"] == "UnreadablePayload" and "input" in failed.error["message"]
    assert (await app.get_run(good)).output == [2]
    with pytest.raises(InvalidInput, match="its input cannot be read"):
        await app.fork(bad, 1)


async def test_a_recorded_step_output_that_cannot_be_read_fails_the_run_naming_the_step(app: App) -> None:
    invoice_workflow(app)
    rid = await crash_after_intent(app)
    await app.resolve(rid, 2, "done", "inv-1")
    await app.db.write(
        lambda c: c.execute(
            "UPDATE steps SET output = ? WHERE run_id = ? AND step_no = 2", (deep_text(TOO_DEEP), rid)
        )
    )
    steps = await app.steps(rid)
    assert isinstance(steps[1].output, Unreadable) and steps[0].output == 120
    run = await drive(app, rid)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "UnreadablePayload" and run.error["step"] == 2
    assert "fork it from step 2" in run.error["message"]
