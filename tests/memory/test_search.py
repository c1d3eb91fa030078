"""Hybrid retrieval: fusion, weights, filters, scopes, rerank hook, scores and provenance."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from crewline.errors import InvalidInput
from crewline.memory import Hit, MemoryStore
from crewline.memory.retrieval import fuse, search_totals
from crewline.memory.vectors import from_blob

from .conftest import run

FACTS = [
    ("Our product code ZX9000 is the premium router", {"lang": "en", "tier": 3}),
    ("The customer prefers email over phone calls", {"lang": "en", "tier": 1}),
    ("Refunds are processed within fourteen days", {"lang": "en", "tier": 2}),
    ("Le client préfère être contacté par courriel", {"lang": "fr", "tier": 1}),
    ("Shipping to Norway takes five business days", {"lang": "en", "tier": 2}),
]


@pytest.fixture
def filled(store: MemoryStore) -> MemoryStore:
    for text, meta in FACTS:
        run(store.remember(text, scope="kb", metadata=meta, dedupe=False))
    run(store.remember("Unrelated scope: ZX9000 recall notice", scope="other", dedupe=False))
    return store


def test_fuse_is_weighted_reciprocal_rank() -> None:
    out = fuse([(1.0, [(1, 0.9), (2, 0.8)]), (2.0, [(2, 5.0), (3, 4.0)])], rrf_k=60)
    scores = {key: score for key, score, _ in out}
    assert scores[2] == pytest.approx(1 / 62 + 2 / 61)
    assert scores[1] == pytest.approx(1 / 61) and scores[3] == pytest.approx(2 / 62)
    assert [key for key, _, _ in out] == [2, 3, 1]
    assert out[0][2] == [(2, 0.8), (1, 5.0)]


def test_hits_carry_both_scores_and_provenance(filled: MemoryStore) -> None:
    hits = run(filled.search("ZX9000 router", scope="kb", k=3))
    top = hits[0]
    assert "ZX9000" in top.text and top.scope == "kb"
    assert top.text_rank == 1 and top.text_score is not None and top.text_score > 0
    assert top.vector_rank is not None and top.vector_score is not None and -1 <= top.vector_score <= 1
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    record = top.to_record()
    assert record["id"] == top.id and "preview" in record and "text" not in record


def test_scopes_are_isolated_and_combinable(filled: MemoryStore) -> None:
    assert all(h.scope == "kb" for h in run(filled.search("ZX9000 recall", scope="kb", k=10)))
    both = run(filled.search("ZX9000 recall", scope=["kb", "other"], k=10))
    assert {h.scope for h in both} == {"kb", "other"}
    assert run(filled.search("ZX9000", scope="nobody", k=5)) == []


def test_weights_switch_sides_off(filled: MemoryStore) -> None:
    text_only = run(filled.search("ZX9000", scope="kb", k=5, vector_weight=0))
    assert [h.vector_rank for h in text_only] == [None] and "ZX9000" in text_only[0].text
    vector_only = run(filled.search("email contact preference", scope="kb", k=5, text_weight=0))
    assert len(vector_only) == 5 and all(h.text_rank is None for h in vector_only)


def test_metadata_filters(filled: MemoryStore) -> None:
    fr = run(filled.search("customer contact", scope="kb", k=5, filter={"lang": "fr"}))
    assert [h.metadata["lang"] for h in fr] == ["fr"]
    cheap = run(filled.search("days", scope="kb", k=5, filter={"tier": {"$lte": 2}, "lang": {"$in": ["en"]}}))
    assert cheap and all(h.metadata["tier"] <= 2 and h.metadata["lang"] == "en" for h in cheap)
    either = run(filled.search("anything", scope="kb", k=10, filter={"$or": [{"tier": 3}, {"lang": "fr"}]}))
    assert sorted(h.metadata["tier"] for h in either) == [1, 3]
    assert run(filled.search("router", scope="kb", k=5, kinds=["note"])) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter": ["lang"]}, "filter must be a mapping"),
        ({"filter": {"tier": {"$between": [1, 2]}}}, r"filter\.tier: unknown operator"),
        ({"filter": {"lang": {"$in": "en"}}}, r"filter\.lang\.\$in needs a list"),
        ({"filter": {"$or": {}}}, r"filter\.\$or must be a non-empty list"),
        ({"k": 0}, "k must be"),
        ({"scope": ["kb", "bad scope"]}, r"scope\[1\]"),
        ({"scope": []}, "at least one scope"),
        ({"vector": [0.1, 0.2, 0.3]}, "vector has dimension 3"),
        ({"vector_weight": -1}, "vector_weight"),
    ],
)
def test_bad_queries_name_the_field(filled: MemoryStore, kwargs: dict, message: str) -> None:
    args = {"scope": "kb", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        run(filled.search("query", **args))


def test_empty_query_is_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="query"):
        run(store.search("   ", scope="kb"))


def test_rerank_hook_sync_and_async(filled: MemoryStore) -> None:
    def reverse(query: str, hits: list[Hit]) -> list[Hit]:
        assert query == "days" and len(hits) >= 2
        return list(reversed(hits))

    plain = run(filled.search("days", scope="kb", k=2, rerank_pool=5))
    reranked = run(filled.search("days", scope="kb", k=2, rerank=reverse, rerank_pool=5))
    assert reranked[0].id != plain[0].id

    async def only_french(query: str, hits: list[Hit]) -> list[Hit]:
        return [h for h in hits if h.metadata.get("lang") == "fr"]

    assert [
        h.metadata["lang"] for h in run(filled.search("client", scope="kb", k=3, rerank=only_french))
    ] == ["fr"]


def test_explicit_query_vector(filled: MemoryStore) -> None:
    item_id = run(filled.search("Norway shipping", scope="kb", k=1))[0].id
    blob = filled.db.query(lambda c: c.scalar("SELECT embedding FROM memory_items WHERE id = ?", (item_id,)))
    hits = run(filled.search("", scope="kb", k=1, vector=from_blob(blob).tolist(), text_weight=0))
    assert hits[0].id == item_id and hits[0].vector_score == pytest.approx(1.0, abs=1e-5)


def test_exact_index_matches_brute_force(store: MemoryStore) -> None:
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    rng = np.random.default_rng(7)
    for i in range(120):
        text = " ".join(rng.choice(words, size=6)) + f" item {i}"
        run(store.remember(text, scope="s:1" if i % 2 else "s:2", dedupe=False))
    query = "gamma delta kappa"
    hits = run(store.search(query, scope="s:1", k=10, text_weight=0))
    rows = store.db.query(lambda c: c.all("SELECT id, embedding FROM memory_items WHERE scope = 's:1'"))
    q = run(store.embed([query]))[0]
    exact = sorted(rows, key=lambda r: -float(from_blob(r[1]) @ q))[:10]
    assert [h.id for h in hits] == [r[0] for r in exact]


def test_other_writers_are_seen_and_deletes_disappear(filled: MemoryStore) -> None:
    other = MemoryStore(filled.db, filled.embedder)  # as another process would, on the same database
    assert len(run(other.search("refunds", scope="kb", k=10, text_weight=0))) == 5
    w = run(filled.remember("Brand new fact about refunds for gift cards", scope="kb"))
    assert w.id in [h.id for h in run(other.search("gift card refunds", scope="kb", k=3))]
    run(filled.delete(w.id))
    assert w.id not in [h.id for h in run(other.search("gift card refunds", scope="kb", k=10))]


def test_search_counts_for_observability(filled: MemoryStore) -> None:
    run(filled.search("router", scope="kb", k=1))
    run(filled.search("router", scope="nobody", k=1))
    stats = run(filled.stats())
    assert (stats.searches, stats.searches_with_hits) == (2, 1)
    assert stats.scopes == {"kb": 5, "other": 1} and stats.dim == filled.embedder.dim


def test_every_search_is_logged_with_the_run_that_searched(filled: MemoryStore) -> None:
    """The log is in the database, so a report sees the searches of every process."""
    started = time.time()
    run(filled.search("router", scope="kb", k=2, run=("run-1", 3)))
    run(filled.search("router", scope=["nobody", "none"], k=1))
    other = MemoryStore(filled.db, filled.embedder)
    [(_, searches, with_hits, top)] = other.db.query(lambda conn: search_totals(conn, started - 1, 10**9))
    assert (searches, with_hits) == (2, 1) and top is not None and top > 0
    rows = filled.db.query(
        lambda conn: conn.all("SELECT scopes, k, hits, run_id, step FROM memory_searches ORDER BY id")
    )
    assert rows == [("kb", 2, 2, "run-1", 3), ("nobody,none", 1, 0, None, None)]


def test_change_feed_is_pruned_and_an_idle_index_reloads(filled: MemoryStore) -> None:
    run(filled.search("router", scope="kb", k=1))
    filled.db.run(lambda c: c.execute("UPDATE memory_changes SET at = 0"))
    run(filled.purge_expired())
    assert filled.db.query(lambda c: c.scalar("SELECT COUNT(*) FROM memory_changes")) == 0
    # a write whose change record is gone is still seen by an index that was idle long enough to reload
    gone = run(filled.search("ZX9000", scope="kb", k=1))[0].id
    filled.db.run(lambda c: c.execute("DELETE FROM memory_items WHERE id = ?", (gone,)))
    index = filled._index
    assert index is not None
    index._feed._synced_at -= 10_000
    assert gone not in [h.id for h in run(filled.search("ZX9000 router", scope="kb", k=10, text_weight=0))]


def test_text_budget_setting(filled: MemoryStore) -> None:
    from crewline.errors import ConfigError

    exact = MemoryStore.from_settings(filled.db, {"text_budget": "exact"}, filled.embedder)
    assert exact._text.postings_budget is None
    assert "ZX9000" in run(exact.search("ZX9000 router premium", scope="kb", k=1))[0].text
    small = MemoryStore.from_settings(filled.db, {"text_budget": 1}, filled.embedder)
    assert "ZX9000" in run(small.search("ZX9000 router premium", scope="kb", k=1, vector_weight=0))[0].text
    with pytest.raises(ConfigError, match="text_budget"):
        MemoryStore.from_settings(filled.db, {"text_budget": "lots"}, filled.embedder)


def test_full_text_never_leaks_other_scopes_or_expired_items(store: MemoryStore) -> None:
    for i in range(60):
        run(store.remember(f"zebra zebra zebra crossing number {i}", scope="tenant:b", dedupe=False))
    mine = run(store.remember("a zebra was seen", scope="tenant:a"))
    run(store.remember("zebra zebra zebra expired note", scope="tenant:a", ttl="1s", dedupe=False))
    run(store.search("warm", scope="tenant:a"))
    index = store._index
    assert index is not None
    hits = run(store.search("zebra", scope="tenant:a", k=5, vector_weight=0, candidates=10))
    assert {h.scope for h in hits} == {"tenant:a"}
    later = store.db.query(lambda c: store._text.search(c, "zebra", ["tenant:a"], 10, time.time() + 5))
    assert [rid for rid, _ in later] == [
        store.db.query(lambda c: c.scalar("SELECT rid FROM memory_items WHERE id = ?", (mine.id,)))
    ]


@pytest.mark.parametrize("few_others", [0, 1024], ids=["masked", "filtered-after"])
@pytest.mark.parametrize("expiring", [False, True])
def test_exact_index_other_scopes_masked_or_filtered_after(
    monkeypatch: pytest.MonkeyPatch, few_others: int, expiring: bool
) -> None:
    """Rows of scopes not searched are masked before ranking, or (a few of them) dropped from the best
    k + few after: either way the best k of the searched scopes, as brute force ranks them."""
    from crewline.memory import vectors

    monkeypatch.setattr(vectors, "_FEW_OTHERS", few_others)
    rng = np.random.default_rng(3)
    index = vectors.ExactIndex(8)
    rows = []
    for rid in range(1, 2001):
        vec = rng.normal(size=8).astype(np.float32)
        vec /= np.linalg.norm(vec)
        scope = "other" if rid % 50 == 0 else "kb"  # 40 rows elsewhere: among the best of any query
        expires = (10.0 if rid % 7 == 0 else 1e12) if expiring else None
        index._put(rid, scope, expires, vec)
        rows.append((rid, scope, expires, vec))
    for _ in range(20):
        q = rng.normal(size=8).astype(np.float32)
        for scope in ("kb", "other"):
            want = sorted(
                (
                    (rid, float(vec @ q))
                    for rid, s, exp, vec in rows
                    if s == scope and (exp is None or exp > 100.0)
                ),
                key=lambda x: -x[1],
            )[:10]
            got = index.search(q, [scope], 10, now=100.0)
            assert [r for r, _ in got] == [r for r, _ in want]
