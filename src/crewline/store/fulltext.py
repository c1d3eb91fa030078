"""Full-text search, the dialect hook: FTS5 with BM25 on SQLite, a ``tsvector`` with ``ts_rank`` on PostgreSQL.

A component describes the table it searches (:class:`TextTable`) and asks ``conn.dialect.fulltext`` to
create the index in a migration, count the rows matching a word, and rank the rows matching a query; it
decides what to ask (which words gate the candidates, which rows are live) and never which engine
answers. Queries are "any of these words"; ``gate`` narrows the candidates to rows holding one of the
gate words (all of them with ``require_all``) while ranking still uses every word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .database import Conn

__all__ = ["Fts5", "FullText", "TextQuery", "TextTable", "TsVector"]


@dataclass(frozen=True)
class TextTable:
    """A table searched by full text: ``rowid`` is its integer key (what a search returns), ``columns``
    the text columns indexed, ``index`` the name of the full-text index (on SQLite, an FTS5 table)."""

    table: str
    rowid: str
    columns: tuple[str, ...]
    index: str


@dataclass(frozen=True)
class TextQuery:
    """``where`` filters the live rows, naming the table's columns with the alias ``i``."""

    words: Sequence[str]
    gate: Sequence[str]
    require_all: bool
    k: int
    where: str = "1 = 1"
    params: tuple[Any, ...] = ()


class FullText:
    def create(self, conn: Conn, table: TextTable) -> None:
        """Create the index and whatever keeps it in step with the table (a migration step)."""
        raise NotImplementedError

    def count_matching(self, conn: Conn, table: TextTable, word: str, cap: int) -> int:
        """Rows containing ``word``, counted up to ``cap``."""
        raise NotImplementedError

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        """The ``q.k`` best (rowid, relevance) among rows passing ``q.where``, best first."""
        raise NotImplementedError

    def search_unfiltered(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]] | None:
        """Like :meth:`search` but ignoring ``q.where`` (the caller filters); ``None`` where that is no
        cheaper than filtering in SQL."""
        return None


class Fts5(FullText):
    """An external-content FTS5 table kept in sync by triggers."""

    def create(self, conn: Conn, table: TextTable) -> None:
        t, cols = table.table, ", ".join(table.columns)
        new = ", ".join(f"new.{c}" for c in table.columns)
        old = ", ".join(f"old.{c}" for c in table.columns)
        delete = f"INSERT INTO {table.index} ({table.index}, rowid, {cols}) VALUES ('delete', old.{table.rowid}, {old});"
        insert = f"INSERT INTO {table.index} (rowid, {cols}) VALUES (new.{table.rowid}, {new});"
        for sql in (
            f"CREATE VIRTUAL TABLE {table.index} USING fts5({cols}, content='{t}', "
            f"content_rowid='{table.rowid}', tokenize='porter unicode61')",
            f"CREATE TRIGGER {t}_fts_insert AFTER INSERT ON {t} BEGIN {insert} END",
            f"CREATE TRIGGER {t}_fts_delete AFTER DELETE ON {t} BEGIN {delete} END",
            f"CREATE TRIGGER {t}_fts_update AFTER UPDATE OF {cols} ON {t} BEGIN {delete} {insert} END",
        ):
            conn.execute(sql)

    def count_matching(self, conn: Conn, table: TextTable, word: str, cap: int) -> int:
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table.index} WHERE {table.index} MATCH ? LIMIT ?) t"
        return int(conn.scalar(sql, (f'"{word}"', cap)) or 0)

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        f = table.index
        rows = conn.all(
            f"SELECT f.rowid, bm25({f}) AS s FROM {f} f JOIN {table.table} i ON i.{table.rowid} = f.rowid "
            f"WHERE {f} MATCH ? AND {q.where} ORDER BY s LIMIT ?",
            (_fts5_match(q), *q.params, q.k),
        )
        return [(int(rid), -float(s)) for rid, s in rows]

    def search_unfiltered(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]] | None:
        f = table.index
        rows = conn.all(
            f"SELECT rowid, bm25({f}) FROM {f} WHERE {f} MATCH ? ORDER BY 2 LIMIT ?", (_fts5_match(q), q.k)
        )
        return [(int(rid), -float(s)) for rid, s in rows]


def _fts5_match(q: TextQuery) -> str:
    every = " OR ".join(f'"{w}"' for w in q.words)
    if list(q.gate) == list(q.words) and not q.require_all:
        return every
    need = (" AND " if q.require_all else " OR ").join(f'"{w}"' for w in q.gate)
    return f"({need}) AND ({every})"  # candidates from the gate words, ranked on every word


class TsVector(FullText):
    """A generated ``tsv`` column (English configuration) under a GIN index."""

    def create(self, conn: Conn, table: TextTable) -> None:
        document = " || ' ' || ".join(f"coalesce({c}, '')" for c in table.columns)
        conn.execute(
            f"ALTER TABLE {table.table} ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('english', {document})) STORED"
        )
        conn.execute(f"CREATE INDEX {table.table}_tsv ON {table.table} USING GIN (tsv)")

    def count_matching(self, conn: Conn, table: TextTable, word: str, cap: int) -> int:
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table.table} WHERE tsv @@ to_tsquery('english', ?) LIMIT ?) t"
        return int(conn.scalar(sql, (_pg_term(word), cap)) or 0)

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        # Candidates must match the gate; ranking uses every word (an AND inside the ranked query would
        # change how ts_rank scores, so the two stay separate queries).
        every = " | ".join(_pg_term(w) for w in q.words)
        need = (" & " if q.require_all else " | ").join(_pg_term(w) for w in q.gate)
        rows = conn.all(
            f"SELECT i.{table.rowid}, ts_rank(i.tsv, q) AS s FROM {table.table} i, to_tsquery('english', ?) q, "
            f"to_tsquery('english', ?) g WHERE i.tsv @@ g AND {q.where} ORDER BY s DESC LIMIT ?",
            (every, need, *q.params, q.k),
        )
        return [(int(rid), float(s)) for rid, s in rows]


def _pg_term(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"
