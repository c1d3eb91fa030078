"""Full-text search per dialect: FTS5 with BM25 on SQLite, ``tsvector`` with ``ts_rank`` on PostgreSQL.

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
        if conn.dialect.name == "sqlite":
            match = _fts5_match(words, gate, require_all)
            if allowed is not None:
                found = _sqlite_unjoined(conn, match, k, allowed)
                if found is not None:
                    return found
            return _sqlite(conn, match, scopes, k, now)
        return _postgres(conn, words, gate, require_all, scopes, k, now)

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
        if conn.dialect.name == "sqlite":
            sql = "SELECT COUNT(*) FROM (SELECT 1 FROM memory_fts WHERE memory_fts MATCH ? LIMIT ?) t"
            arg = f'"{word}"'
        else:
            sql = "SELECT COUNT(*) FROM (SELECT 1 FROM memory_items WHERE tsv @@ to_tsquery('english', ?) LIMIT ?) t"
            arg = _pg_term(word)
        n = int(conn.scalar(sql, (arg, (self.postings_budget or 0) + 1)) or 0)
        with self._lock:
            if len(self._df) >= _CACHE_MAX:
                self._df.clear()
            self._df[word] = (n, now)
        return n


def _fts5_match(words: list[str], gate: list[str], require_all: bool) -> str:
    every = " OR ".join(f'"{w}"' for w in words)
    if gate == words and not require_all:
        return every
    need = (" AND " if require_all else " OR ").join(f'"{w}"' for w in gate)
    return f"({need}) AND ({every})"  # candidates from the gate words, ranked on every word


def _sqlite_unjoined(conn: Conn, match: str, k: int, allowed: Allowed) -> list[tuple[int, float]] | None:
    """Without the join; ``None`` when filtering left too few and there may be more to find."""
    rows = conn.all("SELECT rowid, bm25(memory_fts) FROM memory_fts WHERE memory_fts MATCH ? ORDER BY 2 LIMIT ?",
                    (match, k))  # fmt: skip
    keep = allowed([int(r[0]) for r in rows])
    out = [(int(rid), -float(s)) for (rid, s), ok in zip(rows, keep, strict=True) if ok]
    return out if len(out) == len(rows) or len(rows) < k else None


def _sqlite(conn: Conn, match: str, scopes: Sequence[str], k: int, now: float) -> list[tuple[int, float]]:
    marks = ",".join("?" * len(scopes))
    rows = conn.all(
        "SELECT f.rowid, bm25(memory_fts) AS s FROM memory_fts f JOIN memory_items i ON i.rid = f.rowid "
        f"WHERE memory_fts MATCH ? AND i.scope IN ({marks}) "
        "AND (i.expires_at IS NULL OR i.expires_at > ?) ORDER BY s LIMIT ?",
        (match, *scopes, now, k),
    )
    return [(int(rid), -float(s)) for rid, s in rows]


def _pg_term(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"


def _postgres(
    conn: Conn,
    words: list[str],
    gate: list[str],
    require_all: bool,
    scopes: Sequence[str],
    k: int,
    now: float,
) -> list[tuple[int, float]]:
    # Candidates must match the gate; ranking uses every word (an AND inside the ranked query would
    # change how ts_rank scores, so the two stay separate queries).
    every = " | ".join(_pg_term(w) for w in words)
    need = (" & " if require_all else " | ").join(_pg_term(w) for w in gate)
    marks = ",".join("?" * len(scopes))
    rows = conn.all(
        "SELECT rid, ts_rank(tsv, q) AS s FROM memory_items, to_tsquery('english', ?) q, "
        "to_tsquery('english', ?) g "
        f"WHERE tsv @@ g AND scope IN ({marks}) AND (expires_at IS NULL OR expires_at > ?) "
        "ORDER BY s DESC LIMIT ?",
        (every, need, *scopes, now, k),
    )
    return [(int(rid), float(s)) for rid, s in rows]
