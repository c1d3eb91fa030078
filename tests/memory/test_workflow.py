"""``ctx.memory``: searches and writes as durable, recorded steps, replayed without searching again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context
from crewline.memory import ConversationWindow, LocalEmbedder, MemoryStore
from crewline.memory.workflow import RunMemory
from tests.flows._drive import CrashPlan, drive


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    a = App(db_url)
    yield a
    a.close()


@pytest.fixture
def store(app: App, embedder: LocalEmbedder) -> MemoryStore:
    return MemoryStore(app.db, embedder)


def register(app: App, store: MemoryStore, seen: list[Any]) -> None:
    @app.workflow()
    async def answer(ctx: Context, customer: str) -> dict[str, Any]:
        memory = RunMemory(ctx, store)
        fact_id = await memory.remember("Prefers email over calls", scope=f"customer:{customer}", ttl="365d")
        hits = await memory.search("how to contact the customer", scope=["kb", f"customer:{customer}"], k=3)
        seen.append([h.id for h in hits])
        seen.append(list(ctx.provenance))
        return {"fact": fact_id, "top": hits[0].id, "texts": [h.text for h in hits]}


async def test_search_and_remember_are_recorded_steps(app: App, store: MemoryStore) -> None:
    await store.ingest_text(
        "# Contact\nCustomers are contacted by phone by default.",
        source="kb.md",
        scope="kb",
        mime="text/markdown",
    )
    seen: list[Any] = []
    register(app, store, seen)
    rid = await app.start("answer", "42")
    run = await drive(app, rid)
    assert run.status == "completed"
    steps = await app.steps(rid)
    assert [(s.name, s.effect) for s in steps] == [
        ("memory.remember", "idempotent"),
        ("memory.search", "read"),
    ]
    written = steps[0].output
    assert written["action"] == "added" and written["id"] == run.output["fact"]
    item = await store.get(written["id"])
    assert item is not None and item.author == f"run:{rid}/step:1"
    record = steps[1].output
    assert record["scopes"] == ["kb", "customer:42"]
    assert {h["id"] for h in record["hits"]} >= {run.output["fact"]}
    assert all("score" in h and "vector_score" in h for h in record["hits"])
    chunk = next(h for h in record["hits"] if h["kind"] == "chunk")
    assert chunk["document_id"] and chunk["source"] == "kb.md"
    provenance = seen[1]
    assert provenance[-1]["kind"] == "memory" and provenance[-1]["step"] == 2
    assert [h["id"] for h in provenance[-1]["hits"]] == seen[0]


async def test_replay_returns_recorded_hits_without_searching(app: App, store: MemoryStore) -> None:
    seen: list[Any] = []
    register(app, store, seen)
    plan = CrashPlan([("before_run_completion", 2)])
    app.engine.crash_hook = plan
    rid = await app.start("answer", "7")
    run = await drive(app, rid)
    assert plan.fired and run.status == "completed"
    assert store.searches == 1  # the replay read the recorded step, it did not search again
    assert seen[0] == seen[2]  # and the workflow saw the same hits both times
    items = await store.items("customer:7")
    assert len(items) == 1 and items[0].version == 1


def register_conversation(app: App, seen: list[list[str]]) -> None:
    @app.workflow()
    async def chat(ctx: Context, thread: str) -> list[str]:
        conversation = ctx.memory.conversation(thread)
        await conversation.append("user", "Where is my order?")
        after = await conversation.append("assistant", "It ships tomorrow.")
        window = await conversation.window()
        seen.append([m.content for m in window])
        if len(seen) == 1:  # someone else writes to the thread between the first execution and its replay
            await ConversationWindow(app.db, thread).add("user", "Written outside the run")
        return [m.content for m in after]


async def test_conversation_turns_are_steps_appended_once_across_a_crash(app: App) -> None:
    seen: list[list[str]] = []
    register_conversation(app, seen)
    plan = CrashPlan([("after_step_commit", 1), ("before_run_completion", 3)])
    app.engine.crash_hook = plan
    rid = await app.start("chat", "thread:T1")
    run = await drive(app, rid)
    assert plan.fired == [("after_step_commit", 1), ("before_run_completion", 3)]
    assert run.status == "completed"
    assert run.output == ["Where is my order?", "It ships tomorrow."]
    steps = await app.steps(rid)
    assert [(s.name, s.effect) for s in steps] == [
        ("memory.conversation.append", "idempotent"),
        ("memory.conversation.append", "idempotent"),
        ("memory.conversation.window", "read"),
    ]
    stored = [m.content for m in await ConversationWindow(app.db, "thread:T1").messages()]
    assert stored == ["Where is my order?", "It ships tomorrow.", "Written outside the run"]
    assert seen[0] == seen[-1] == ["Where is my order?", "It ships tomorrow."]  # the replay read the record


async def test_a_keyed_turn_is_added_once(app: App) -> None:
    window = ConversationWindow(app.db, "thread:T2")
    await window.add("user", "Hello", key="run_1/1")
    await window.add("user", "Hello", key="run_1/1")  # a step retried after its insert committed
    await window.add("user", "Hello")
    assert [m.content for m in await window.messages()] == ["Hello", "Hello"]


async def test_a_bad_thread_id_is_a_clear_error(app: App) -> None:
    @app.workflow()
    async def bad(ctx: Context) -> None:
        ctx.memory.conversation("no spaces allowed")

    run = await drive(app, await app.start("bad"))
    assert run.status == "failed" and "is not a valid scope" in str(run.error)
