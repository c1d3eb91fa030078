"""Named checkpoints, reruns of the same run from a step or checkpoint, and forks by name."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from crewline import App, Context, InvalidInput, InvalidRunState
from crewline.errors import ConfigError
from crewline.store.retention import prune

from ._drive import drive, step_once


@pytest.fixture
def app(db_url: str) -> Any:
    a = App(db_url)
    yield a
    a.close()


def drafting(app: App, fail_send: list[bool] | None = None) -> Counter[str]:
    """research -> draft -> checkpoint "drafted" -> polish -> checkpoint "drafted" -> send."""
    calls = Counter[str]()
    failing = fail_send if fail_send is not None else [False]

    async def research(topic: str) -> str:
        calls["research"] += 1
        return f"notes on {topic}"

    async def draft(notes: str) -> str:
        calls["draft"] += 1
        return f"draft {calls['draft']} from {notes}"

    async def polish(text: str) -> str:
        calls["polish"] += 1
        return text + " (polished)"

    async def send(text: str) -> str:
        calls["send"] += 1
        if failing[0]:
            raise RuntimeError("mail server said no")
        return f"sent: {text}"

    @app.workflow()
    async def write(ctx: Context, topic: str) -> str:
        notes = await ctx.step(research, topic, name="research")
        text = await ctx.step(draft, notes, name="draft")
        await ctx.checkpoint("drafted")
        text = await ctx.step(polish, text, name="polish")
        await ctx.checkpoint("drafted")
        return await ctx.step(send, text, name="send")

    return calls


async def test_a_checkpoint_is_a_recorded_step_that_replays_without_a_second_record(app: App) -> None:
    drafting(app)
    rid = await app.start("write", "tea")
    run = await drive(app, rid)
    assert run.status == "completed" and run.attempt == 1
    steps = await app.steps(rid)
    assert [(s.step_no, s.kind, s.name, s.status) for s in steps if s.kind == "checkpoint"] == [
        (3, "checkpoint", "drafted", "done"),
        (5, "checkpoint", "drafted", "done"),
    ]
    assert await app.attempts(rid) == []


async def test_rerun_from_a_checkpoint_continues_the_same_run_and_keeps_the_earlier_attempt(app: App) -> None:
    calls = drafting(app)
    rid = await app.start("write", "tea")
    first = await drive(app, rid)
    before = await app.steps(rid)
    assert await app.rerun(rid, "drafted") == (2, 3)
    pending = await app.get_run(rid)
    assert (pending.status, pending.attempt, pending.output, pending.finished_at) == (
        "pending",
        2,
        None,
        None,
    )
    assert [s.step_no for s in await app.steps(rid)] == [1, 2]  # the rest is the earlier attempt now
    run = await drive(app, rid)
    assert run.id == rid and run.status == "completed" and run.attempt == 2
    assert calls == {"research": 1, "draft": 1, "polish": 2, "send": 2}  # steps 1-2 replayed, 3-6 again
    assert run.output == first.output  # the same inputs gave the same answer
    [earlier] = await app.attempts(rid)
    assert (earlier.attempt, earlier.from_step, earlier.status) == (1, 3, "completed")
    assert [s.to_json() for s in earlier.steps] == [s.to_json() for s in before[2:]]
    assert [s.step_no for s in await app.steps(rid)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("where", "from_step"), [("drafted#2", 5), ("drafted#1", 3), (4, 4), ("4", 4)])
async def test_a_name_used_twice_picks_the_first_unless_numbered(
    app: App, where: int | str, from_step: int
) -> None:
    calls = drafting(app)
    rid = await app.start("write", "tea")
    await drive(app, rid)
    assert await app.rerun(rid, where) == (2, from_step)
    await drive(app, rid)
    assert calls["polish"] == (2 if from_step <= 4 else 1)


async def test_a_failed_run_reruns_from_the_failed_step_and_a_cancelled_one_from_any(app: App) -> None:
    fail = [True]
    calls = drafting(app, fail)
    rid = await app.start("write", "tea")
    failed = await drive(app, rid)
    assert failed.status == "failed"
    fail[0] = False
    await app.rerun(rid, "send")  # a function step is named after its function
    run = await drive(app, rid)
    assert run.status == "completed" and run.error is None and run.output.startswith("sent: draft 1")
    [earlier] = await app.attempts(rid)
    assert earlier.status == "failed" and "mail server said no" in str(earlier.error)
    assert [(s.name, s.status) for s in earlier.steps] == [("send", "failed")]

    cancelled = await app.start("write", "coffee")
    await app.cancel(cancelled)
    await app.rerun(cancelled, 1)
    assert (await drive(app, cancelled)).status == "completed"
    assert calls["research"] == 2  # the cancelled run never ran before its rerun


async def test_rerun_refuses_a_run_that_has_not_finished_and_changes_nothing(app: App) -> None:
    drafting(app)
    rid = await app.start("write", "tea")
    with pytest.raises(InvalidRunState, match=f"cannot rerun run {rid}: it is pending; only completed"):
        await app.rerun(rid, 1)
    run = await app.get_run(rid)
    assert (run.status, run.attempt) == ("pending", 1) and await app.attempts(rid) == []


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("polished", "its steps and checkpoints are research, draft, drafted, polish, send"),
        ("drafted#3", "it has 2 steps named 'drafted' (steps 3, 5); use drafted#1 to drafted#2"),
        ("send#2", "it has one step named 'send' (step 6); use send"),
        (9, "from step 9: it has steps 1 to 6"),
    ],
)
async def test_an_unknown_step_is_refused_naming_what_the_run_has(
    app: App, where: int | str, message: str
) -> None:
    drafting(app)
    rid = await app.start("write", "tea")
    await drive(app, rid)
    steps = await app.steps(rid)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        await app.rerun(rid, where)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        await app.fork(rid, where)
    run = await app.get_run(rid)
    assert (run.status, run.attempt) == ("completed", 1)
    assert await app.steps(rid) == steps and await app.attempts(rid) == []


async def test_fork_by_name(app: App) -> None:
    calls = drafting(app)
    rid = await app.start("write", "tea")
    await drive(app, rid)
    fork = await app.fork(rid, "drafted#2")
    run = await drive(app, fork)
    assert run.fork_step == 5 and run.status == "completed"
    assert calls == {"research": 1, "draft": 1, "polish": 1, "send": 2}


@pytest.mark.parametrize("name", ["", "  ", "42", "x" * 201])
async def test_a_checkpoint_needs_a_name_that_is_not_a_number(app: App, name: str) -> None:
    @app.workflow()
    async def marks(ctx: Context, _: Any) -> None:
        await ctx.checkpoint(name)

    run = await drive(app, await app.start("marks", None))
    assert run.status == "failed" and run.error["type"] == ConfigError.__name__
    assert 'ctx.checkpoint("drafted")' in run.error["message"]


async def test_a_rerun_asks_again_starts_a_new_child_and_waits_for_its_event_again(app: App) -> None:
    @app.workflow()
    async def child(ctx: Context, n: int) -> int:
        return n * 2

    @app.workflow()
    async def parent(ctx: Context, _: Any) -> list[Any]:
        decision = await ctx.approve("publish", risk="high")
        doubled = await ctx.child("child", 21)
        payload = await ctx.wait_for("go")
        return [decision.approved, doubled, payload]

    rid = await app.start("parent", None)
    await step_once(app, "w1")
    [req] = await app.reviews.list()
    await app.reviews.approve(req.id, by="sam")
    await app.send_event(rid, "go", {"n": 1})
    first = await drive(app, rid)
    assert first.output == [True, 42, {"n": 1}]

    await app.rerun(rid, "publish")
    await step_once(app, "w2")
    run = await app.get_run(rid)
    assert run.status == "waiting" and run.wait_reason == f"approval:{rid}:1~2"  # asked again
    await app.reviews.reject(f"{rid}:1~2", by="kim")
    again = await drive(app, rid)
    assert again.output == [False, 42, {"n": 1}]  # the event it consumed before is received again
    children = await app.list_runs(workflow="child")
    assert sorted(c.id for c in children) == [f"{rid}.2", f"{rid}.2~2"]


async def test_prune_drops_the_earlier_attempts_with_the_run_steps(app: App) -> None:
    drafting(app)
    rid = await app.start("write", "tea")
    await drive(app, rid)
    await app.rerun(rid, "drafted")
    await drive(app, rid)
    assert len(await app.attempts(rid)) == 1
    report = await asyncio.to_thread(prune, app.db, -60)
    assert report.runs == 1 and await app.attempts(rid) == [] and await app.steps(rid) == []
