"""Long-term items: scopes, metadata, TTL, dedup, versions, snapshots, rollback, forget."""

from __future__ import annotations

import time

import pytest

from crewline.errors import InvalidInput
from crewline.memory import MemoryStore

from .conftest import run


def texts(store: MemoryStore, scope: str) -> list[str]:
    return sorted(i.text for i in run(store.items(scope)))


def test_remember_and_get_keep_metadata_and_author(store: MemoryStore) -> None:
    w = run(
        store.remember(
            "Prefers email over calls", scope="customer:1", metadata={"src": "ticket"}, author="run:r1/step:2"
        )
    )
    assert w.action == "added" and w.version == 1
    item = run(store.get(w.id))
    assert item is not None
    assert (item.text, item.scope, item.kind, item.metadata, item.author) == (
        "Prefers email over calls",
        "customer:1",
        "fact",
        {"src": "ticket"},
        "run:r1/step:2",
    )


def test_exact_duplicate_is_not_added_twice(store: MemoryStore) -> None:
    a = run(store.remember("Prefers email over calls", scope="customer:1"))
    b = run(store.remember("  prefers EMAIL over   calls ", scope="customer:1"))
    assert b.id == a.id and b.action == "unchanged"
    assert texts(store, "customer:1") == ["Prefers email over calls"]


def test_same_text_in_another_scope_is_separate(store: MemoryStore) -> None:
    a = run(store.remember("Prefers email over calls", scope="customer:1"))
    b = run(store.remember("Prefers email over calls", scope="customer:2"))
    assert a.id != b.id and b.action == "added"


def test_near_duplicate_updates_instead_of_adding(store: MemoryStore) -> None:
    store.near_duplicate = 0.9
    a = run(store.remember("The customer prefers email over phone calls", scope="c:1"))
    b = run(store.remember("The customer prefers e-mail over phone calls", scope="c:1"))
    assert b.id == a.id and b.action == "updated" and b.version == 2
    assert b.duplicate_score is not None and b.duplicate_score >= 0.9
    assert texts(store, "c:1") == ["The customer prefers e-mail over phone calls"]
    assert [v.op for v in run(store.history(a.id))] == ["add", "update"]


def test_unrelated_fact_is_added(store: MemoryStore) -> None:
    run(store.remember("Prefers email over calls", scope="c:1"))
    run(store.remember("Invoice 1042 was paid on 3 March", scope="c:1"))
    assert len(texts(store, "c:1")) == 2


def test_metadata_merges_and_bumps_version(store: MemoryStore) -> None:
    a = run(store.remember("Timezone is CET", scope="c:1", metadata={"a": 1}))
    b = run(store.remember("Timezone is CET", scope="c:1", metadata={"b": 2}))
    assert (b.id, b.action, b.version) == (a.id, "updated", 2)
    item = run(store.get(a.id))
    assert item is not None and item.metadata == {"a": 1, "b": 2}


def test_ttl_hides_expired_items_and_purge_removes_them(store: MemoryStore) -> None:
    w = run(store.remember("Temporary discount code SPRING", scope="c:1", ttl="1s"))
    run(store.remember("Permanent fact about spring", scope="c:1"))
    item = run(store.get(w.id))
    assert item is not None and item.expires_at is not None
    hits_now = run(store.search("discount code spring", scope="c:1", k=5))
    assert w.id in [h.id for h in hits_now]
    later = time.time() + 5
    assert run(store.purge_expired(now=later)) == 1
    assert run(store.get(w.id)) is None
    assert [v.op for v in run(store.history(w.id))] == ["add", "expire"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"text": "", "scope": "c:1"}, "text"),
        ({"text": "x", "scope": "bad scope"}, "scope"),
        ({"text": "x", "scope": ""}, "scope"),
        ({"text": "x", "scope": "c:1", "ttl": "soon"}, "ttl"),
        ({"text": "x", "scope": "c:1", "ttl": 0}, "ttl"),
        ({"text": "x", "scope": "c:1", "metadata": {"k": object()}}, "metadata"),
        ({"text": "x", "scope": "c:1", "embedding": [0.1, 0.2]}, "embedding"),
        ({"text": "x" * 200_000, "scope": "c:1"}, "text"),
        ({"text": "a\x00b", "scope": "c:1"}, "text"),
    ],
)
def test_bad_input_names_the_field(store: MemoryStore, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        run(store.remember(**kwargs))


def test_delete_records_a_version(store: MemoryStore) -> None:
    w = run(store.remember("Likes dogs", scope="c:1"))
    assert run(store.delete(w.id)) is True
    assert run(store.get(w.id)) is None
    assert run(store.delete(w.id)) is False
    assert [(v.op, v.state is None) for v in run(store.history(w.id))] == [("add", False), ("delete", True)]


def test_rollback_to_snapshot_restores_updates_deletes_and_adds(store: MemoryStore) -> None:
    a = run(store.remember("Plan is Basic", scope="c:1"))
    b = run(store.remember("Lives in Lyon", scope="c:1"))
    snap = run(store.snapshot("c:1", label="before-import"))
    run(store.remember("Plan is Premium", scope="c:1", id=a.id))
    run(store.delete(b.id))
    run(store.remember("Has three cats", scope="c:1"))
    run(store.remember("Other scope untouched", scope="c:2"))
    report = run(store.rollback("c:1", to=snap.id))
    assert (report.restored, report.removed) == (2, 1)
    assert texts(store, "c:1") == ["Lives in Lyon", "Plan is Basic"]
    assert texts(store, "c:2") == ["Other scope untouched"]
    # restored items are searchable again (their vectors came back too)
    assert run(store.search("Lyon", scope="c:1", k=1))[0].id == b.id
    # the rollback is itself history, so it can be undone by label or time
    assert [v.op for v in run(store.history(a.id))] == ["add", "update", "rollback"]
    run(store.rollback("c:1", to="before-import"))
    assert texts(store, "c:1") == ["Lives in Lyon", "Plan is Basic"]


def test_rollback_to_a_time(store: MemoryStore) -> None:
    run(store.remember("First fact", scope="c:1"))
    time.sleep(0.02)
    point = time.time()
    time.sleep(0.02)
    run(store.remember("Second fact", scope="c:1"))
    run(store.rollback("c:1", to=point))
    assert texts(store, "c:1") == ["First fact"]


def test_rollback_errors(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="no snapshot"):
        run(store.rollback("c:1", to="nope"))
    with pytest.raises(InvalidInput, match="future"):
        run(store.rollback("c:1", to=time.time() + 3600))


def test_forget_removes_everything_of_a_scope(store: MemoryStore) -> None:
    w = run(store.remember("Secret preference", scope="c:9"))
    run(store.snapshot("c:9"))
    run(
        store.ingest_text(
            "# Notes\nprivate notes about c9", source="notes.md", scope="c:9", mime="text/markdown"
        )
    )
    run(store.remember("Keep me", scope="c:10"))
    counts = run(store.forget("c:9"))
    assert (
        counts["items"] == 2
        and counts["documents"] == 1
        and counts["snapshots"] == 1
        and counts["blobs"] == 1
    )
    assert run(store.get(w.id)) is None and run(store.history(w.id)) == []
    assert run(store.search("secret preference private notes", scope="c:9", k=5)) == []
    assert texts(store, "c:10") == ["Keep me"]
    leftovers = store.db.query(
        lambda c: (
            c.scalar("SELECT COUNT(*) FROM memory_versions WHERE scope = 'c:9'"),
            c.scalar("SELECT COUNT(*) FROM blobs"),
        )
    )
    assert leftovers == (0, 0)
    if store.db.dialect.name == "sqlite":
        assert (
            store.db.query(
                lambda c: c.scalar("SELECT COUNT(*) FROM memory_fts WHERE memory_fts MATCH 'secret'")
            )
            == 0
        )


async def test_concurrent_identical_writes_store_one_item(store: MemoryStore) -> None:
    import asyncio

    results = await asyncio.gather(*(store.remember("Prefers tea", scope="c:1") for _ in range(6)))
    assert len({r.id for r in results}) == 1
    assert sorted(r.action for r in results).count("added") == 1
    assert len(await store.items("c:1")) == 1


def test_scopes_list_items_documents_and_emptied_scopes_with_their_last_write(store: MemoryStore) -> None:
    assert run(store.scopes()) == []
    run(store.remember("Plan is Basic", scope="c:1"))
    run(store.remember("Lives in Lyon", scope="c:1"))
    gone = run(store.remember("Temporary", scope="c:2"))
    run(store.delete(gone.id))
    run(
        store.ingest_text(
            "# Refunds\n\nWithin 30 days.", source="refunds.md", scope="docs", mime="text/markdown"
        )
    )
    listed = {s.scope: s for s in run(store.scopes())}
    assert list(listed) == ["c:1", "c:2", "docs"]
    assert (listed["c:1"].items, listed["c:1"].documents) == (2, 0)
    assert (listed["c:2"].items, listed["c:2"].documents) == (0, 0)  # emptied, but it can be rolled back
    assert listed["docs"].documents == 1 and listed["docs"].items >= 1
    assert all(s.last_write is not None and s.last_write <= time.time() for s in listed.values())
