"""Full-text search of memory items, through the dialect's hook (:mod:`crewline.store.fulltext`).

A query is cut into words and searched as "any of these words", ranked by the database's relevance
(BM25 on SQLite, ts_rank on PostgreSQL). Asking the database to rank every document holding any query
word is slow (a common word matches most of a corpus), and pruning the candidates to the rarest words
loses documents that belonged in the answer. Both engines' relevance is a sum of one share per query
word, so :class:`TextIndex` asks the database once for each word's shares in every document holding it,
keeps them in process (up to a number of postings, least recently used out), and ranks by adding them up
with numpy: the same ranking as the unpruned query, ties by rowid. The index follows the
``memory_changes`` feed (:mod:`.feed`). Where a share depends only on its own row (PostgreSQL's
ts_rank), a change re-reads the changed rows' shares of the kept words; where it depends on the whole
corpus (BM25's document counts and average length), every kept share is dropped. A word seen for the
first time costs a few microseconds per document holding it, so :meth:`TextIndex.warm` loads the words
most documents hold (the expensive ones) in the background, a few at a time on the database's reader
threads; a query never waits for it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from ..store.database import Conn, Database
from ..store.fulltext import TextQuery
from . import versions as v
from .feed import FeedCursor
from .versions import ITEMS_TEXT

__all__ = ["TextIndex", "terms"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = """
a an and are as at be but by can do does for from had has have how i if in into is it its me my no not
of on or our so that the their them then there these they this to was we what when where which who why
will with you your
"""
_STOP = frozenset(_STOP_WORDS.split())
_SAMPLE = 2000  # texts read to find the words most documents hold
_WARM_SLICE = 0.05  # seconds of loading per reader job, so that searches interleave
log = logging.getLogger(__name__)
# rids -> which of them are live items of the searched scopes (answered by the in-process vector index).
Allowed = Callable[[list[int]], list[bool]]
_Shares = tuple[NDArray[np.int64], NDArray[np.float64]]


def terms(query: str, *, limit: int = 32) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in _STOP] or words
    out: list[str] = []
    for w in kept:
        if w not in out:
            out.append(w)
    return out[:limit]


class TextIndex:
    """Exact full-text ranking from word shares kept in process."""

    def __init__(self, postings_budget: int | None = 4_000_000) -> None:
        """``postings_budget``: how many (document, share) pairs the process keeps (16 bytes each);
        ``None`` keeps none and asks the database to rank every query unpruned."""
        if postings_budget is not None and postings_budget < 1:
            raise ValueError(f"postings_budget must be positive or None, got {postings_budget}")
        self.postings_budget = postings_budget
        self._shares: OrderedDict[str, _Shares] = OrderedDict()
        self._kept = 0
        self._feed = FeedCursor()
        self._epoch = 0  # bumped whenever kept shares change: a word read across a change is not kept
        self._lock = threading.Lock()
        self.warmed = threading.Event()  # set when the warm-up ended (or there is none: nothing kept)
        self._warming = False
        if postings_budget is None:
            self.warmed.set()

    def warm(self, db: Database) -> None:
        """Start loading the words most documents hold, in the background, up to the budget (once)."""
        with self._lock:
            if self._warming or self.postings_budget is None:
                return
            self._warming = True
        if not db.background(lambda conn: self._warm_step(db, conn, None)):
            self.warmed.set()

    def _warm_step(self, db: Database, conn: Conn, words: list[str] | None) -> None:
        try:
            self._follow(conn)
            if words is None:
                words = _frequent(v.sample_texts(conn, _SAMPLE))
            until = time.monotonic() + _WARM_SLICE
            while words and time.monotonic() < until and self._kept < (self.postings_budget or 0):
                self._word(conn, words.pop(0), evict=False)
        except Exception:  # a closed database or an outage: the searches load their own words
            log.debug("full-text warm-up stopped", exc_info=True)
            words = []
        rest = words
        if (
            not rest
            or self._kept >= (self.postings_budget or 0)
            or not db.background(lambda c: self._warm_step(db, c, rest))
        ):
            self.warmed.set()

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

        With ``allowed`` (which rids are live items of the scopes), from the kept shares; otherwise the
        database ranks the query."""
        words = terms(query)
        if not words or k <= 0:
            return []
        if self.postings_budget is not None and allowed is not None:
            return self._ranked(conn, words, k, allowed)
        marks = ",".join("?" * len(scopes))
        live = f"i.scope IN ({marks}) AND (i.expires_at IS NULL OR i.expires_at > ?)"
        return conn.dialect.fulltext.search(conn, ITEMS_TEXT, TextQuery(words, k, live, (*scopes, now)))

    def _ranked(self, conn: Conn, words: list[str], k: int, allowed: Allowed) -> list[tuple[int, float]]:
        counted, factor = conn.dialect.fulltext.rank_terms(conn, words)
        self._follow(conn)
        parts = [self._word(conn, w) for w in counted]
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return []
        rids = np.concatenate([p[0] for p in parts])
        # One share per word, added in the query's order from 0.0: the database's own sum, bit for bit.
        total = np.bincount(rids, weights=np.concatenate([p[1] for p in parts]))
        found = np.flatnonzero(total)
        return _best(found, (total[found] * factor).astype(np.float64), k, allowed)

    def _follow(self, conn: Conn) -> None:
        """Bring the kept shares up to the change feed."""
        with self._lock:
            changed = self._feed.changed(conn)
            if changed is None or (changed and not conn.dialect.fulltext.shares_are_local):
                self._shares.clear()
                self._kept = 0
                self._epoch += 1
            elif changed:
                self._patch(conn, np.array(sorted(changed), dtype=np.int64))
                self._epoch += 1

    def _patch(self, conn: Conn, changed: NDArray[np.int64]) -> None:
        """Replace the changed rows' postings in every kept word (shares that depend on their row only)."""
        words = list(self._shares)
        if not words:
            return
        fresh: dict[int, list[tuple[int, float]]] = {}
        for i, rid, share in conn.dialect.fulltext.row_scores(conn, ITEMS_TEXT, words, changed.tolist()):
            fresh.setdefault(i, []).append((rid, share))
        for i, word in enumerate(words):
            rids, shares = self._shares[word]
            at = np.searchsorted(rids, changed)
            held = at[(at < len(rids)) & (rids[np.minimum(at, len(rids) - 1)] == changed)]
            if not len(held) and i not in fresh:
                continue
            rids, shares = np.delete(rids, held), np.delete(shares, held)
            added = fresh.get(i, [])
            if added:
                rids = np.concatenate([rids, np.array([r for r, _ in added], dtype=np.int64)])
                shares = np.concatenate([shares, np.array([s for _, s in added], dtype=np.float64)])
                order = np.argsort(rids, kind="stable")
                rids, shares = rids[order], shares[order]
            self._kept += len(rids) - len(self._shares[word][0])
            self._shares[word] = (rids, shares)

    def _word(self, conn: Conn, word: str, *, evict: bool = True) -> _Shares:
        with self._lock:
            kept = self._shares.get(word)
            if kept is not None:
                self._shares.move_to_end(word)
                return kept
            epoch = self._epoch
        rows = conn.dialect.fulltext.word_scores(conn, ITEMS_TEXT, word)
        rids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        shares = np.fromiter((s for _, s in rows), dtype=np.float64, count=len(rows))
        order = np.argsort(rids, kind="stable")  # sorted by rid: a change finds its rows by bisection
        shares_kept = (rids[order], shares[order])
        budget = self.postings_budget or 0
        room = budget if evict else budget - self._kept  # the warm-up only fills what is free
        with self._lock:
            if epoch == self._epoch and word not in self._shares and len(rows) <= room:
                self._shares[word] = shares_kept
                self._kept += len(rows)
                while self._kept > budget:
                    _, dropped = self._shares.popitem(last=False)
                    self._kept -= len(dropped[0])
        return shares_kept


def _frequent(texts: list[str]) -> list[str]:
    """Words held by at least two of ``texts``, most held first."""
    held = Counter(w for text in texts for w in terms(text, limit=10_000))
    return [w for w, n in held.most_common() if n >= 2]


def _best(
    rids: NDArray[np.int64], scores: NDArray[np.float64], k: int, allowed: Allowed
) -> list[tuple[int, float]]:
    """The ``k`` best allowed rows, ties by rid; looks further down while too few of the best are allowed."""
    want = k
    while True:
        if want < len(rids):
            top = np.argpartition(-scores, want - 1)[:want]
            cut = scores[top].min()
            top = np.flatnonzero(scores >= cut)  # every row tied with the last one, for the rid order
        else:
            top = np.arange(len(rids))
        top = top[np.lexsort((rids[top], -scores[top]))]
        ordered = [int(r) for r in rids[top]]
        keep = allowed(ordered)
        out = [(rid, float(scores[i])) for rid, i, ok in zip(ordered, top, keep, strict=True) if ok]
        if len(out) >= k or len(top) >= len(rids):
            return out[:k]
        want *= 4
