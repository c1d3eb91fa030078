"""Hybrid retrieval: vector and full-text candidates fused by weighted reciprocal rank.

Each side ranks its own candidates; an item's fused score is ``sum(weight / (rrf_k + rank))`` over the
sides that found it (rank from 1), the scheme of Cormack et al. that needs no score calibration between
cosine and BM25. Metadata filters and kinds are applied to the fused list, widening the candidate pool
when too few survive; an optional reranker then reorders the best few.

Every search is also logged in ``memory_searches`` (this module owns the table): when, which scopes, how
many hits of how many asked, the best score, and the run and step that searched. Retrieval quality over
time is read back from it (:func:`search_totals`), in SQL, the same on every process.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..store.database import Conn
from ..store.payloads import load_json
from . import versions as v
from .filters import matches
from .fulltext import TextIndex
from .results import Hit
from .vectors import VectorSearch

__all__ = [
    "Query",
    "Reranker",
    "SearchLog",
    "SearchWindow",
    "fuse",
    "log_search",
    "run_query",
    "search_totals",
    "search_window",
]

Reranker = Callable[[str, list[Hit]], "list[Hit] | Awaitable[list[Hit]]"]


@dataclass(frozen=True)
class Query:
    text: str
    vector: NDArray[np.float32] | None
    scopes: Sequence[str]
    k: int
    filter: dict[str, Any] | None = None
    kinds: frozenset[str] | None = None
    vector_weight: float = 1.0
    text_weight: float = 1.0
    candidates: int = 50
    rrf_k: int = 60
    min_score: float | None = None
    now: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SearchLog:
    """One line of the search log."""

    at: float
    scopes: tuple[str, ...]
    k: int
    hits: int
    top_score: float | None
    run_id: str | None = None
    step: int | None = None


def log_search(conn: Conn, entry: SearchLog) -> None:
    conn.execute(
        "INSERT INTO memory_searches (at, scopes, k, hits, top_score, run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (entry.at, ",".join(entry.scopes), entry.k, entry.hits, entry.top_score, entry.run_id, entry.step),
    )


def search_totals(conn: Conn, since: float, bucket_seconds: int) -> list[tuple[int, int, int, float | None]]:
    """Per time bucket since ``since``: (bucket start, searches, searches with a hit, mean top score)."""
    bucket = conn.dialect.time_bucket("at", bucket_seconds)
    rows = conn.all(
        f"SELECT {bucket} AS b, COUNT(*), SUM(CASE WHEN hits > 0 THEN 1 ELSE 0 END), AVG(top_score) "
        "FROM memory_searches WHERE at >= ? GROUP BY b ORDER BY b",
        (since,),
    )
    return [(int(b), int(n), int(hit or 0), None if top is None else float(top)) for b, n, hit, top in rows]


@dataclass(frozen=True)
class SearchWindow:
    """How the searches of one time window fared."""

    searches: int = 0
    with_hits: int = 0
    top_score_sum: float = 0.0
    scored: int = 0  # searches that reported a top score

    @property
    def hit_rate(self) -> float:
        return self.with_hits / self.searches if self.searches else 0.0

    @property
    def mean_top_score(self) -> float | None:
        return self.top_score_sum / self.scored if self.scored else None

    def __add__(self, other: SearchWindow) -> SearchWindow:
        return SearchWindow(
            self.searches + other.searches,
            self.with_hits + other.with_hits,
            self.top_score_sum + other.top_score_sum,
            self.scored + other.scored,
        )


def search_window(conn: Conn, start: float, end: float, scope: str | None = None) -> SearchWindow:
    """Searches logged in ``[start, end)``; with ``scope``, only those that searched a scope starting with it.

    Grouped by the logged scope list and matched here rather than with LIKE, whose case rules differ
    between dialects: the distinct scope lists of a window are few.
    """
    rows = conn.all(
        "SELECT scopes, COUNT(*), SUM(CASE WHEN hits > 0 THEN 1 ELSE 0 END), SUM(top_score), COUNT(top_score) "
        "FROM memory_searches WHERE at >= ? AND at < ? GROUP BY scopes",
        (start, end),
    )
    total = SearchWindow()
    for scopes, n, hit, top_sum, scored in rows:
        if scope is None or any(s.startswith(scope) for s in str(scopes).split(",")):
            total += SearchWindow(int(n), int(hit or 0), float(top_sum or 0.0), int(scored))
    return total


def fuse(
    ranked: Sequence[tuple[float, Sequence[tuple[int, float]]]], rrf_k: int = 60
) -> list[tuple[int, float, list[tuple[int, float] | None]]]:
    """Weighted RRF over ``(weight, [(id, score), ...best first])`` lists.

    Returns ``(id, fused, [(rank, score) or None per list])`` best first; ties keep first-seen order.
    """
    fused: dict[int, float] = {}
    where: dict[int, list[tuple[int, float] | None]] = {}
    for side, (weight, items) in enumerate(ranked):
        for rank, (key, score) in enumerate(items, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (rrf_k + rank)
            where.setdefault(key, [None] * len(ranked))[side] = (rank, score)
    order = sorted(fused, key=lambda key: -fused[key])
    return [(key, fused[key], where[key]) for key in order]


def run_query(conn: Conn, index: VectorSearch | None, text: TextIndex, q: Query) -> list[Hit]:
    """Candidates from both sides, fused, filtered and loaded; widens the pool once if filters starve it."""
    pool = max(q.candidates, q.k) * (4 if (q.filter or q.kinds) else 1)
    for attempt in range(2):
        vec: list[tuple[int, float]] = []
        if index is not None and q.vector is not None and q.vector_weight > 0:
            vec = index.search(q.vector, q.scopes, pool, now=q.now)
        allowed = None if index is None else functools.partial(index.allowed, scopes=q.scopes, now=q.now)
        txt = text.search(conn, q.text, q.scopes, pool, q.now, allowed) if q.text_weight > 0 else []
        fused = fuse([(q.vector_weight, vec), (q.text_weight, txt)], q.rrf_k)
        hits = _load(conn, fused, q)
        exhausted = len(vec) < pool and len(txt) < pool
        if len(hits) >= q.k or exhausted or attempt == 1:
            return hits[: q.k]
        pool *= 10
    return []  # pragma: no cover


def _load(conn: Conn, fused: list[tuple[int, float, list[tuple[int, float] | None]]], q: Query) -> list[Hit]:
    hits: list[Hit] = []
    batch = 200 if (q.filter or q.kinds) else q.k + 5  # unfiltered, the first k (+ a few deleted) suffice
    for start in range(0, len(fused), batch):
        part = fused[start : start + batch]
        rows = v.hit_rows(conn, [rid for rid, _, _ in part])
        by_rid = {int(r[0]): r for r in rows}
        for rid, score, sides in part:
            row = by_rid.get(rid)
            if row is None:
                continue  # deleted since the index saw it
            hit = _hit(row, score, sides)
            if q.min_score is not None and score < q.min_score:
                return hits
            if q.kinds is not None and hit.kind not in q.kinds:
                continue
            if q.filter and not matches(q.filter, hit.metadata):
                continue
            hits.append(hit)
            if len(hits) >= q.k:
                return hits
    return hits


def _hit(row: tuple[Any, ...], score: float, sides: list[tuple[int, float] | None]) -> Hit:
    _, id_, scope, kind, text, meta, version, doc_id, source, pos, heading, cs, ce = row
    v, t = sides
    return Hit(
        id=id_,
        scope=scope,
        kind=kind,
        text=text,
        score=score,
        vector_score=None if v is None else v[1],
        text_score=None if t is None else t[1],
        vector_rank=None if v is None else v[0],
        text_rank=None if t is None else t[0],
        metadata=load_json(meta) if meta else {},
        version=int(version),
        document_id=doc_id,
        source=source,
        position=pos,
        heading=heading,
        char_start=cs,
        char_end=ce,
    )
