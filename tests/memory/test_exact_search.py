"""Full-quality hybrid search equals a brute-force reference: exact cosine over the stored vectors and the
database's relevance (FTS5's BM25, PostgreSQL's ts_rank) computed here from the texts, fused by RRF.

The corpus is built for the hard cases: a skewed vocabulary (common words match most documents), word
orders permuted so that many documents tie on text relevance, another scope counted in BM25's statistics
but never returned; the word shares kept in process are tried with room for a few words (so they are
dropped and asked again), with plenty, and with none (the database ranks each query), and must follow a
write made between two searches."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from crewline.memory import MemoryStore
from crewline.memory.fulltext import TextIndex
from crewline.memory.retrieval import fuse

from .conftest import run

# Words every stemmer here leaves alone and no stop list holds: the reference tokenises by splitting.
VOCABULARY = [
    "cat",
    "dog",
    "fox",
    "owl",
    "elk",
    "yak",
    "ant",
    "bee",
    "cod",
    "eel",
    "emu",
    "gnu",
    "hen",
    "pig",
    "ram",
    "rat",
    "bat",
    "cow",
]
ADDED = "cat dog cat gnu emu"
QUERIES = [
    "cat dog",
    "fox owl elk",
    "yak ant bee cod",
    "gnu cat",
    "pig ram rat bat cow",
    "emu",
    "eel dog hen",
]


def corpus(rng: np.random.Generator) -> list[tuple[str, str]]:
    weights = 1 / np.arange(1, len(VOCABULARY) + 1)
    weights /= weights.sum()
    docs = []
    for i in range(70):
        words = [VOCABULARY[j] for j in rng.choice(len(VOCABULARY), size=int(rng.integers(2, 9)), p=weights)]
        docs.append(("kb" if i < 60 else "other", " ".join(words)))
        if i % 4 == 0:  # the same words in another order: a tie on text relevance
            docs.append(("kb", " ".join(rng.permutation(words))))
    return docs


def bm25(docs: list[list[str]], query: list[str]) -> list[float]:
    """FTS5's bm25() over every row of the table (k1 = 1.2, b = 0.75, idf floored at 1e-6)."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    counts = [Counter(d) for d in docs]
    idf = {
        w: max(math.log((n - (df := sum(w in c for c in counts)) + 0.5) / (df + 0.5)), 1e-6) for w in query
    }
    return [
        sum(idf[w] * c[w] * 2.2 / (c[w] + 1.2 * (0.25 + 0.75 * len(d) / avgdl)) for w in query if c[w])
        for d, c in zip(docs, counts, strict=True)
    ]


def ts_rank(docs: list[list[str]], query: list[str]) -> list[float]:
    """PostgreSQL's ts_rank (weight D = 0.1, no normalisation) for an OR query of distinct lexemes."""
    lexemes = set(query)

    def term(tf: int) -> float:
        return sum(0.1 / (j * j) for j in range(1, tf + 1)) / 1.64493406685

    return [float(np.float32(sum(term(d.count(w)) for w in lexemes) / len(lexemes))) for d in docs]


Row = tuple[int, str, str, np.ndarray]  # rid, scope, text, unit vector


def text_ranking(rows: list[Row], query: str, postgres: bool) -> list[tuple[int, float]]:
    """Every item of scope kb holding a query word, best first, ties by rid."""
    scores = (ts_rank if postgres else bm25)([text.split() for _, _, text, _ in rows], query.split())
    digits = 6 if postgres else 12  # significant digits: float4 on PostgreSQL
    kb = [
        (rid, float(f"{s:.{digits}g}"))
        for (rid, scope, _, _), s in zip(rows, scores, strict=True)
        if scope == "kb"
    ]
    return sorted(((rid, s) for rid, s in kb if s > 0), key=lambda x: (-x[1], x[0]))


def vector_ranking(rows: list[Row], qv: np.ndarray) -> list[tuple[int, float]]:
    return sorted(
        ((rid, float(v @ qv)) for rid, scope, _, v in rows if scope == "kb"), key=lambda x: (-x[1], x[0])
    )


@pytest.mark.parametrize("budget", [40, 4_000_000, None], ids=["evicting", "kept", "unpruned"])
def test_full_quality_hybrid_equals_brute_force(store: MemoryStore, budget: int | None) -> None:
    rng = np.random.default_rng(7)
    dim = store.embedder.dim
    for scope, text in corpus(rng):
        vec = rng.normal(size=dim)
        run(store.remember(text, scope=scope, embedding=list(vec / np.linalg.norm(vec)), dedupe=False))
    searcher = MemoryStore(store.db, store.embedder, text_budget=budget)
    stored = store.db.query(lambda c: c.all("SELECT rid, id, scope, text, embedding FROM memory_items"))
    ids = {int(r[0]): r[1] for r in stored}
    rows: list[Row] = [(int(r[0]), r[2], r[3], np.frombuffer(bytes(r[4]), dtype="<f4")) for r in stored]
    texts = {rid: text.split() for rid, _, text, _ in rows}
    postgres = store.db.dialect.name == "postgresql"
    ties = pruning_would_miss = 0
    for n, query in enumerate(QUERIES):
        if n == 3:  # a write between searches changes every word's share (BM25's counts and lengths)
            vec = rng.normal(size=dim)
            run(store.remember(ADDED, scope="kb", embedding=list(vec / np.linalg.norm(vec)), dedupe=False))
            got = store.db.query(lambda c: c.one("SELECT rid, id FROM memory_items WHERE text = ?", (ADDED,)))
            ids[int(got[0])] = got[1]
            rows.append((int(got[0]), "kb", ADDED, (vec / np.linalg.norm(vec)).astype(np.float32)))
            texts[int(got[0])] = ADDED.split()
        qv = rng.normal(size=dim).astype(np.float32)
        qv /= np.linalg.norm(qv)
        ranked = text_ranking(rows, query, postgres)
        text, vec = ranked[:6], vector_ranking(rows, qv)[:6]
        got = store.db.query(lambda c, q=query: TextIndex(None).search(c, q, ["kb"], 6, 1e12))
        assert [rid for rid, _ in got] == [rid for rid, _ in text], query  # the database's own ranking
        assert [s for _, s in got] == pytest.approx([s for _, s in text], rel=1e-5)
        hits = run(searcher.search(query, scope="kb", k=4, candidates=6, vector=list(qv)))
        assert [h.id for h in hits] == [ids[rid] for rid, _, _ in fuse([(1.0, vec), (1.0, text)])[:4]], query
        alone = run(searcher.search(query, scope="kb", k=6, vector_weight=0))
        assert [(h.id, h.text_rank) for h in alone] == [(ids[rid], n) for n, (rid, _) in enumerate(text, 1)]
        assert [h.text_score for h in alone] == pytest.approx([s for _, s in text], rel=1e-5)
        ties += len({s for _, s in text}) < len(text)
        rarest = min(query.split(), key=lambda w: sum(w in t for t in texts.values()))
        pruning_would_miss += [r for r, _ in ranked if rarest in texts[r]][:6] != [r for r, _ in text]
    assert ties and pruning_would_miss  # the corpus does exercise tied scores and words a pruning would miss


def test_kept_shares_follow_edits_and_deletes(store: MemoryStore) -> None:
    """Each kind of write between searches: the kept postings rank as the database does right after it,
    and the terms already kept stay kept through a write (only the changed rows are re-read)."""
    rng = np.random.default_rng(11)
    kb = [run(store.remember(t, scope=s, dedupe=False)).id for s, t in corpus(rng) if s == "kb"]
    searcher = MemoryStore(store.db, store.embedder)
    run(searcher.ready())
    assert searcher._text.warmed.wait(60)  # no words arriving from the warm-up during the checks

    def agree() -> None:
        ids = dict(store.db.query(lambda c: c.all("SELECT rid, id FROM memory_items")))
        for query in ["cat dog", "fox owl", "gnu emu cat"]:
            want = store.db.query(lambda c, q=query: TextIndex(None).search(c, q, ["kb"], 200, 1e12))
            hits = run(searcher.search(query, scope="kb", k=200, vector_weight=0))
            assert [h.id for h in hits] == [ids[rid] for rid, _ in want], query
            assert [h.text_score for h in hits] == pytest.approx([s for _, s in want], rel=1e-5), query

    agree()
    run(store.remember("owl owl fox cat", scope="kb", id=kb[0]))  # an edit: words gained and lost
    agree()
    run(store.delete(kb[1]))
    agree()
    run(store.remember(ADDED, scope="kb", dedupe=False))
    agree()
    kept = set(searcher._text._terms)
    assert kept
    run(store.delete(kb[2]))
    store.db.query(searcher._text._follow)
    assert set(searcher._text._terms) == kept  # patched in place, on both databases
    agree()


def test_nothing_kept_means_no_warm_up_to_wait_for(store: MemoryStore) -> None:
    searcher = MemoryStore(store.db, store.embedder, text_budget=None)
    run(searcher.ready())
    assert searcher._text.warmed.is_set() and not searcher._text._terms


@pytest.mark.parametrize("budget", [40, 4_000_000])
def test_warm_up_loads_the_words_most_documents_hold_within_the_budget(
    store: MemoryStore, budget: int
) -> None:
    rng = np.random.default_rng(5)
    texts = [t for _, t in corpus(rng)]
    for text in texts:
        run(store.remember(text, scope="kb", dedupe=False))
    searcher = MemoryStore(store.db, store.embedder, text_budget=budget)
    run(searcher.ready())
    assert searcher._text.warmed.wait(60)
    held = Counter(w for t in texts for w in set(t.split()))
    kept = searcher._text._terms
    assert 0 < searcher._text._kept <= budget
    assert held.most_common(1)[0][0] in kept or budget < held.most_common(1)[0][1]
    if budget > len(texts) * len(VOCABULARY):
        assert set(kept) == {w for w, n in held.items() if n >= 2}  # the sample is every text here
    want = store.db.query(lambda c: TextIndex(None).search(c, "cat dog", ["kb"], 10, 1e12))
    hits = run(searcher.search("cat dog", scope="kb", k=10, vector_weight=0))
    assert [h.text_score for h in hits] == pytest.approx([s for _, s in want], rel=1e-5)


def test_stemmed_and_joined_words_rank_as_the_database(store: MemoryStore) -> None:
    """Words the tokenizer folds together ("runs", "running"), cuts ("snake_case"), or folds accents of:
    the kept postings rank as the database ranks the same query, before and after a write."""
    texts = [
        "running dogs run fast",
        "the runner runs",
        "snake_case names and snake charmers",
        "élan and elan",
        "a dog that runs and runs and runs",
        "nothing to see",
    ]
    for text in texts:
        run(store.remember(text, scope="kb", dedupe=False))
    searcher = MemoryStore(store.db, store.embedder, text_budget=1000)
    queries = ["running dog", "runs", "snake_case", "Élan", "runner snake", "run run"]

    def agree() -> None:
        for query in queries:
            want = store.db.query(lambda c, q=query: TextIndex(None).search(c, q, ["kb"], 10, 1e12))
            hits = run(searcher.search(query, scope="kb", k=10, vector_weight=0))
            got = store.db.query(lambda c: c.all("SELECT rid, id FROM memory_items"))
            ids = dict(got)
            assert [h.id for h in hits] == [ids[rid] for rid, _ in want], query
            assert [h.text_score for h in hits] == pytest.approx([s for _, s in want], rel=1e-6), query

    agree()
    run(store.remember("runs runs runs snake", scope="kb", dedupe=False))
    agree()


def test_fts5_shares_are_bm25_bit_for_bit(store: MemoryStore) -> None:
    """On SQLite, each row's share computed in process from token counts and statistics equals the
    engine's own bm25() of the one-word query exactly (not approximately)."""
    if store.db.dialect.name != "sqlite":
        pytest.skip("FTS5 is SQLite's")
    rng = np.random.default_rng(3)
    for _, text in corpus(rng):
        run(store.remember(text, scope="kb", dedupe=False))
    fulltext = store.db.dialect.fulltext

    def shares(c, word: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:  # type: ignore[no-untyped-def]
        from crewline.memory.versions import ITEMS_TEXT

        postings = fulltext.postings(c, ITEMS_TEXT, word)
        mine = fulltext.shares(postings, fulltext.statistics(c, ITEMS_TEXT))
        theirs = c.all(
            "SELECT rowid, -bm25(memory_fts) FROM memory_fts WHERE memory_fts MATCH ?", (f'"{word}"',)
        )
        return list(zip(postings.rowids.tolist(), mine.tolist(), strict=True)), sorted(theirs)

    for word in VOCABULARY:
        mine, theirs = store.db.query(lambda c, w=word: shares(c, w))
        assert mine == theirs, word


@pytest.mark.parametrize("k", [1, 3, 10, 200])
def test_pruned_ranking_equals_adding_every_share(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    """The MaxScore pruning (used where a query's postings are many) returns what adding every share up
    returns, ties and another scope's rows included, for short and long answers; on SQLite that is also
    the database's own ranking (PostgreSQL sums its float4 ts_rank shares in float4, so its near-ties may
    fall the other way)."""
    from crewline.memory import fulltext

    rng = np.random.default_rng(13)
    for scope, text in corpus(rng) + corpus(rng):
        run(store.remember(text, scope=scope, dedupe=False))
    searcher = MemoryStore(store.db, store.embedder)
    pruned = 0
    real = fulltext._pruned

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal pruned
        result = real(*args, **kwargs)
        pruned += result is not None
        return result

    monkeypatch.setattr(fulltext, "_pruned", counting)
    for query in [*QUERIES, "cat dog fox owl elk yak ant bee cod eel"]:
        answers = []
        for prune_from in (10**9, 0):
            monkeypatch.setattr(fulltext, "_PRUNE_FROM", prune_from)
            hits = run(searcher.search(query, scope="kb", k=k, vector_weight=0, candidates=k))
            answers.append([(h.id, h.text_score) for h in hits])
        assert answers[1] == answers[0], query  # bit for bit
        if store.db.dialect.name == "sqlite":
            ids = dict(store.db.query(lambda c: c.all("SELECT rid, id FROM memory_items")))
            want = store.db.query(lambda c, q=query: TextIndex(None).search(c, q, ["kb"], k, 1e12))
            assert [i for i, _ in answers[1]] == [ids[rid] for rid, _ in want], query
    # The pruned answer was returned for short answers on SQLite (where BM25's idf makes common words'
    # shares small; ts_rank has no idf, so there pruning seldom pays); for 200 (more than a rare word
    # holds) never.
    if k <= 3 and store.db.dialect.name == "sqlite":
        assert pruned
    if k == 200:
        assert not pruned
