"""``ctx.memory``: searches and writes as durable, recorded steps, replayed without searching again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context
from crewline.memory import LocalEmbedder, MemoryStore
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
