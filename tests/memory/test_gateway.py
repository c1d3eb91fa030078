"""Memory through the real model gateway (with the scripted test model): embeddings and summaries are
ordinary gateway calls, recorded like any other."""

from __future__ import annotations

from crewline.memory import MemoryStore
from crewline.memory.embedders import gateway_embedder
from crewline.memory.window import ConversationWindow, gateway_summariser
from crewline.models.gateway import Gateway
from crewline.store import Database
from crewline.testing.scripted import ScriptedModel


async def test_gateway_embedder_feeds_the_store_and_is_recorded(db: Database) -> None:
    gateway = Gateway.for_testing(ScriptedModel(), db)
    store = MemoryStore(db, gateway_embedder(gateway, "test/embed", dim=8))
    written = await store.remember("Prefers email over calls", scope="c:1")
    hits = await store.search("Prefers email over calls", scope="c:1", k=1)
    assert hits[0].id == written.id and hits[0].vector_score is not None and hits[0].vector_score > 0.99
    await gateway.flush()
    kinds = await db.read(lambda c: [r[0] for r in c.all("SELECT kind FROM model_calls")])
    assert kinds.count("embed") >= 2  # the write and the query, each a priced, recorded call
    stats = await store.stats()
    assert (stats.embedder, stats.dim) == ("test/embed", 8)
    await gateway.aclose()


async def test_window_summaries_go_through_the_gateway(db: Database) -> None:
    gateway = Gateway.for_testing(ScriptedModel(default="Customer Ana wants a refund for order 12."), db)
    window = ConversationWindow(
        db, "conv:9", max_tokens=30, keep_recent=1, summarise=gateway_summariser(gateway), count_tokens=len
    )
    for text in ("I am Ana", "order 12 is broken", "I want a refund", "thanks"):
        await window.add("user", text)
    messages = await window.messages()
    assert messages[0].summary and messages[0].content == "Customer Ana wants a refund for order 12."
    assert messages[-1].content == "thanks"
    await gateway.flush()
    assert await db.read(lambda c: c.scalar("SELECT COUNT(*) FROM model_calls WHERE kind != 'embed'")) >= 1
    await gateway.aclose()
