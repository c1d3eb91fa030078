"""Full-text search of memory items, through the dialect's hook (:mod:`crewline.store.fulltext`).

A query is cut into words and searched as "any of these words", ranked by the database's relevance
(BM25 on SQLite, ts_rank on PostgreSQL). Asking the database to rank every document holding any query
word is slow (a common word matches most of a corpus), and pruning the candidates to the rarest words
loses documents that belonged in the answer. Both engines' relevance is a sum of one share per query
term, so :class:`TextIndex` keeps each term's postings in process (the rows holding it and one number per
row that depends on that row alone: a token frequency on SQLite, the ts_rank share on PostgreSQL), up to
a number of postings, least recently used out, plus the dialect's corpus statistics (BM25's row count,
token count and row lengths), and ranks by turning postings into shares and adding them up with numpy:
the same ranking as the unpruned query, ties by rowid. The index follows the ``memory_changes`` feed
(:mod:`.feed`): a change re-reads the changed rows' postings of the kept terms and their statistics, so a
write costs in proportion to the rows it touched, on both databases. A term seen for the first time costs
a few tenths of a microsecond (SQLite) to a few microseconds (PostgreSQL) per row holding it, so
:meth:`TextIndex.warm` loads the terms most rows hold (the expensive ones) in the background, a few at a
time on the database's reader threads; a query never waits for it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..store.database import Conn, Database
from ..store.fulltext import Postings, TextQuery
from . import versions as v
from .feed import FeedCursor
from .topk import largest
from .versions import ITEMS_TEXT

__all__ = ["TextIndex", "terms"]

# Letters and digits: an underscore cuts a word, as the full-text tokenizers do.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
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


def terms(query: str, *, limit: int = 32) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in _STOP] or words
    out: list[str] = []
    for w in kept:
        if w not in out:
            out.append(w)
    return out[:limit]


@dataclass(frozen=True)
class _Shares:
    """Each row's share of one term's relevance, by rowid ascending, and the largest of them."""

    rowids: NDArray[np.int64]
    values: NDArray[np.float64]
    peak: float


@dataclass
class _Kept:
    """One term's postings, and its shares under the statistics of ``epoch`` once computed."""

    postings: Postings
    shares: _Shares | None = None
    epoch: int = -1


class TextIndex:
    """Exact full-text ranking from term postings and corpus statistics kept in process."""

    def __init__(self, postings_budget: int | None = 4_000_000) -> None:
        """``postings_budget``: how many (row, term) postings the process keeps (about 20 bytes each);
        ``None`` keeps none and asks the database to rank every query unpruned."""
        if postings_budget is not None and postings_budget < 1:
            raise ValueError(f"postings_budget must be positive or None, got {postings_budget}")
        self.postings_budget = postings_budget
        self._terms: OrderedDict[str, _Kept] = OrderedDict()
        self._kept = 0
        self._statistics: Any = None
        self._feed = FeedCursor()
        self._epoch = 0  # bumped whenever postings or statistics change: a term read across it is not kept
        self._lock = threading.Lock()
        self.warmed = threading.Event()  # set when the warm-up ended (or there is none: nothing kept)
        self._warming = False
        if postings_budget is None:
            self.warmed.set()

    def warm(self, db: Database) -> None:
        """Start loading the terms most documents hold, in the background, up to the budget (once)."""
        with self._lock:
            if self._warming or self.postings_budget is None:
                return
            self._warming = True
        if not db.background(lambda conn: self._warm_step(db, conn, None)):
            self.warmed.set()

    def _warm_step(self, db: Database, conn: Conn, todo: list[str] | None) -> None:
        try:
            self._follow(conn)
            if todo is None:
                todo = _frequent(conn, v.sample_texts(conn, _SAMPLE))
            until = time.monotonic() + _WARM_SLICE
            while todo and time.monotonic() < until and self._kept < (self.postings_budget or 0):
                self._postings(conn, todo.pop(0), evict=False)
        except Exception:  # a closed database or an outage: the searches load their own terms
            log.debug("full-text warm-up stopped", exc_info=True)
            todo = []
        rest = todo
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

        With ``allowed`` (which rids are live items of the scopes), from the kept postings; otherwise the
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
        parts = [p for p in (self._shares(conn, t) for t in counted) if len(p.rowids)]
        return _top(parts, factor, k, allowed) if parts else []

    def _shares(self, conn: Conn, term: str) -> _Shares:
        kept = self._postings(conn, term)
        with self._lock:
            epoch, statistics = self._epoch, self._statistics
            if kept.epoch == epoch and kept.shares is not None:
                return kept.shares
        shares = conn.dialect.fulltext.shares(kept.postings, statistics)
        out = _Shares(kept.postings.rowids, shares, float(shares.max()) if len(shares) else 0.0)
        with self._lock:
            if self._epoch == epoch:
                kept.shares, kept.epoch = out, epoch
        return out

    def _follow(self, conn: Conn) -> None:
        """Bring the kept postings and statistics up to the change feed."""
        hook = conn.dialect.fulltext
        with self._lock:
            changed = self._feed.changed(conn)
            if changed is None:
                self._terms.clear()
                self._kept = 0
                self._statistics = hook.statistics(conn, ITEMS_TEXT)
                self._epoch += 1
            elif changed:
                rids = sorted(changed)
                self._patch(conn, np.array(rids, dtype=np.int64))
                self._statistics = hook.statistics(conn, ITEMS_TEXT, self._statistics, rids)
                self._epoch += 1

    def _patch(self, conn: Conn, changed: NDArray[np.int64]) -> None:
        """Replace the changed rows' postings in every kept term."""
        kept = list(self._terms)
        if not kept:
            return
        fresh: dict[int, list[tuple[int, float]]] = {}
        for i, rid, value in conn.dialect.fulltext.row_postings(conn, ITEMS_TEXT, kept, changed.tolist()):
            fresh.setdefault(i, []).append((rid, value))
        first = int(changed[0])  # changed is sorted
        for i, term in enumerate(kept):
            old = self._terms[term].postings
            rids, values = old.rowids, old.values
            if i not in fresh and (not len(rids) or int(rids[-1]) < first):
                continue  # rows added after all of this term's: the common case, checked without a search
            at = np.searchsorted(rids, changed)
            held = at[(at < len(rids)) & (rids[np.minimum(at, len(rids) - 1)] == changed)]
            if not len(held) and i not in fresh:
                continue
            rids, values = np.delete(rids, held), np.delete(values, held)
            added = Postings.of(fresh.get(i, []))
            if len(added.rowids):
                rids = np.concatenate([rids, added.rowids])
                values = np.concatenate([values, added.values])
                order = np.argsort(rids, kind="stable")
                rids, values = rids[order], values[order]
            self._kept += len(rids) - len(old.rowids)
            self._terms[term] = _Kept(Postings(rids, values))

    def _postings(self, conn: Conn, term: str, *, evict: bool = True) -> _Kept:
        with self._lock:
            kept = self._terms.get(term)
            if kept is not None:
                self._terms.move_to_end(term)
                return kept
            epoch = self._epoch
        kept = _Kept(conn.dialect.fulltext.postings(conn, ITEMS_TEXT, term))
        size = len(kept.postings.rowids)
        budget = self.postings_budget or 0
        room = budget if evict else budget - self._kept  # the warm-up only fills what is free
        with self._lock:
            if epoch == self._epoch and term not in self._terms and size <= room:
                self._terms[term] = kept
                self._kept += size
                while self._kept > budget:
                    _, dropped = self._terms.popitem(last=False)
                    self._kept -= len(dropped.postings.rowids)
        return kept


def _frequent(conn: Conn, texts: list[str]) -> list[str]:
    """Terms held by at least two of ``texts``, most held first."""
    held = Counter(w for text in texts for w in terms(text, limit=10_000))
    counted, _ = conn.dialect.fulltext.rank_terms(conn, [w for w, n in held.most_common() if n >= 2])
    return list(dict.fromkeys(counted))


_PRUNE_FROM = 100_000  # postings in a query below which adding every share up is as quick as pruning


def _top(parts: list[_Shares], factor: float, k: int, allowed: Allowed) -> list[tuple[int, float]]:
    """The ``k`` best allowed rows by the sum of their shares over ``parts`` (times ``factor``)."""
    pruned = _pruned(parts, factor, k, allowed)
    if pruned is not None:
        return pruned
    rids = np.concatenate([p.rowids for p in parts])
    # One share per term, added in the query's order from 0.0: the database's own sum, bit for bit.
    total = np.bincount(rids, weights=np.concatenate([p.values for p in parts]))
    found = np.flatnonzero(total)
    return _best(found, (total[found] * factor).astype(np.float64), k, allowed)


def _pruned(parts: list[_Shares], factor: float, k: int, allowed: Allowed) -> list[tuple[int, float]] | None:
    """:func:`_top` without adding every posting up (MaxScore), or ``None`` where that would not pay.

    The terms that can add the most to a row are *essential*. A row holding none of them scores at most
    ``rest``, the sum of the other terms' largest shares; a row holding one scores at most its essential
    shares plus ``rest``. The best rows by essential shares are scored in full: if ``k`` allowed ones beat
    ``rest``, their ``k``-th score is a threshold only rows whose essential shares plus ``rest`` reach it
    can pass, and those few are scored in full for the answer. Otherwise one more term becomes essential,
    until pruning would save nothing. A common word has a small share (BM25's idf), so the rows only it
    holds are never read."""
    sizes = [len(p.rowids) for p in parts]
    if sum(sizes) <= _PRUNE_FROM or len(parts) < 2:
        return None
    order = sorted(range(len(parts)), key=lambda i: -parts[i].peak)
    partial = np.zeros(max(int(p.rowids[-1]) for p in parts) + 1, dtype=np.float64)
    for e in range(1, len(parts)):
        if sum(sizes[i] for i in order[:e]) > sum(sizes) // 2:
            return None
        added = parts[order[e - 1]]
        partial[added.rowids] += added.values  # a term's rowids are distinct
        rest = sum(parts[i].peak for i in order[e:]) * factor * (1 + 1e-9)  # float sums may round up
        rows = np.flatnonzero(partial)
        scores = partial[rows] * factor
        sample = min(len(rows), 4 * k)
        while True:
            top = rows[largest(scores, sample)]
            best = _best(np.sort(top), _sum_at(parts, np.sort(top)) * factor, k, allowed)
            if len(best) >= k or sample >= len(rows):
                break
            sample = min(len(rows), sample * 4)
        if len(best) < k or best[-1][1] <= rest:
            continue
        reach = rows[scores + rest >= best[-1][1] * (1 - 1e-9)]
        return _best(reach, _sum_at(parts, reach) * factor, k, allowed)
    return None


def _sum_at(parts: list[_Shares], rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each of ``rows``' sum of shares, added in the parts' order from 0.0 as the bincount above does."""
    total = np.zeros(len(rows), dtype=np.float64)
    for p in parts:
        at = np.minimum(np.searchsorted(p.rowids, rows), len(p.rowids) - 1)
        total += np.where(p.rowids[at] == rows, p.values[at], 0.0)
    return total


def _best(
    rids: NDArray[np.int64], scores: NDArray[np.float64], k: int, allowed: Allowed
) -> list[tuple[int, float]]:
    """The ``k`` best allowed rows, ties by rid; looks further down while too few of the best are allowed."""
    want = k
    while True:
        if want < len(rids):
            top = largest(scores, want)
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
