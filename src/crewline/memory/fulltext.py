"""Full-text search per dialect: FTS5 with BM25 on SQLite, ``tsvector`` with ``ts_rank_cd`` on PostgreSQL.

A query is cut into words and searched as "any of these words" (ranking does the rest), with common
English stop words dropped so a question like "how do I reset the password" does not rank every chunk
that contains "the".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..store.database import Conn

__all__ = ["search_text", "terms"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = """
a an and are as at be but by can do does for from had has have how i if in into is it its me my no not
of on or our so that the their them then there these they this to was we what when where which who why
will with you your
"""
_STOP = frozenset(_STOP_WORDS.split())


def terms(query: str, *, limit: int = 32) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in _STOP] or words
    out: list[str] = []
    for w in kept:
        if w not in out:
            out.append(w)
    return out[:limit]


def search_text(conn: Conn, query: str, scopes: Sequence[str], k: int, now: float) -> list[tuple[int, float]]:
    """The ``k`` best (rid, relevance) for ``query`` among live items of ``scopes``, best first."""
    words = terms(query)
    if not words or k <= 0:
        return []
    marks = ",".join("?" * len(scopes))
    if conn.dialect.name == "sqlite":
        match = " OR ".join(f'"{w}"' for w in words)
        rows = conn.all(
            "SELECT f.rowid, bm25(memory_fts) AS s FROM memory_fts f JOIN memory_items i ON i.rid = f.rowid "
            f"WHERE memory_fts MATCH ? AND i.scope IN ({marks}) "
            "AND (i.expires_at IS NULL OR i.expires_at > ?) "
            "ORDER BY s LIMIT ?",
            (match, *scopes, now, k),
        )
        return [(int(rid), -float(s)) for rid, s in rows]
    tsquery = " | ".join(words)
    rows = conn.all(
        "SELECT rid, ts_rank_cd(tsv, q) AS s FROM memory_items, to_tsquery('english', ?) q "
        f"WHERE tsv @@ q AND scope IN ({marks}) AND (expires_at IS NULL OR expires_at > ?) "
        "ORDER BY s DESC LIMIT ?",
        (tsquery, *scopes, now, k),
    )
    return [(int(rid), float(s)) for rid, s in rows]
