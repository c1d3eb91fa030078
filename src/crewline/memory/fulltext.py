"""Full-text search of memory items, through the dialect's hook (:mod:`crewline.store.fulltext`).

A query is cut into words and searched as "any of these words", ranked by relevance. Scoring every
document that contains any query word is what makes naive OR queries slow (a common word matches most of
a corpus), so :class:`TextIndex` keeps per-word document counts (cached for a minute) and takes as
candidates the documents containing one of the rarest words, within a budget of postings (if every word
is common, those containing the two rarest together); candidates are still ranked on every query word.
Only documents matching nothing but common words are missed, and those score low in BM25 anyway.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence

from ..store.database import Conn
from ..store.fulltext import TextQuery
from .versions import ITEMS_TEXT

__all__ = ["TextIndex", "terms"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = """
a an and are as at be but by can do does for from had has have how i if in into is it its me my no not
of on or our so that the their them then there these they this to was we what when where which who why
will with you your
"""
_STOP = frozenset(_STOP_WORDS.split())
_CACHE_SECONDS = 60.0
_CACHE_MAX = 50_000
# rids -> which of them are live items of the searched scopes (answered by the in-process vector index).
Allowed = Callable[[list[int]], list[bool]]


def terms(query: str, *, limit: int = 32) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in _STOP] or words
    out: list[str] = []
    for w in kept:
        if w not in out:
            out.append(w)
    return out[:limit]


class TextIndex:
    """Ranked full-text candidates, with the per-word document counts that keep queries cheap."""

    def __init__(self, postings_budget: int | None = 2000) -> None:
        """``postings_budget``: roughly how many documents one query may score; ``None`` scores every
        document containing any query word (exact BM25 ranking, slower on large corpora)."""
        if postings_budget is not None and postings_budget < 1:
            raise ValueError(f"postings_budget must be positive or None, got {postings_budget}")
        self.postings_budget = postings_budget
        self._df: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def search(
        self,
        conn: Conn,
        query: str,
        scopes: Sequence[str],
        k: int,
        now: float,
        allowed: Allowed | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` best (rid, relevance) for ``query`` among live items of ``scopes``, best first.

        ``allowed`` (SQLite) checks scope and expiry in memory, sparing the join on most queries."""
        words = terms(query)
        if not words or k <= 0:
            return []
        gate, require_all = self._plan(conn, words)
        text = conn.dialect.fulltext
        if allowed is not None:
            found = _unjoined(conn, TextQuery(words, gate, require_all, k), allowed)
            if found is not None:
                return found
        marks = ",".join("?" * len(scopes))
        live = f"i.scope IN ({marks}) AND (i.expires_at IS NULL OR i.expires_at > ?)"
        return text.search(conn, ITEMS_TEXT, TextQuery(words, gate, require_all, k, live, (*scopes, now)))

    def _plan(self, conn: Conn, words: list[str]) -> tuple[list[str], bool]:
        """The words a candidate must contain (one of, or both with ``True``); all words when unpruned."""
        if len(words) == 1 or self.postings_budget is None:
            return words, False
        budget = self.postings_budget
        by_df = sorted(words, key=lambda w: self._doc_count(conn, w))
        kept: list[str] = []
        total = 0
        for w in by_df:
            df = self._doc_count(conn, w)
            if kept and total + df > budget:
                break
            kept.append(w)
            total += df
        if total > budget:  # even the rarest word is common: require the two rarest
            return by_df[:2], True
        return kept, False

    def _doc_count(self, conn: Conn, word: str) -> int:
        assert self.postings_budget is not None
        """Documents containing ``word``, counted only up to just past the budget (all we need to know)."""
        now = time.monotonic()
        hit = self._df.get(word)
        if hit is not None and now - hit[1] < _CACHE_SECONDS:
            return hit[0]
        n = conn.dialect.fulltext.count_matching(conn, ITEMS_TEXT, word, (self.postings_budget or 0) + 1)
        with self._lock:
            if len(self._df) >= _CACHE_MAX:
                self._df.clear()
            self._df[word] = (n, now)
        return n


def _unjoined(conn: Conn, q: TextQuery, allowed: Allowed) -> list[tuple[int, float]] | None:
    """Without the join; ``None`` when filtering left too few and there may be more to find."""
    rows = conn.dialect.fulltext.search_unfiltered(conn, ITEMS_TEXT, q)
    if rows is None:
        return None
    keep = allowed([rid for rid, _ in rows])
    out = [row for row, ok in zip(rows, keep, strict=True) if ok]
    return out if len(out) == len(rows) or len(rows) < q.k else None
