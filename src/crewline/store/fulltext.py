"""Full-text search, the dialect hook: FTS5 with BM25 on SQLite, a ``tsvector`` with ``ts_rank`` on PostgreSQL.

A component describes the table it searches (:class:`TextTable`) and asks ``conn.dialect.fulltext`` to
create the index in a migration, rank the rows matching a query ("any of these words"), or give one
word's share of that relevance in every row holding it. Both engines' relevance of an "any of these
words" query is a sum over its words (:meth:`FullText.rank_terms` says which words and the factor on the
sum), so a caller may add up shares it kept and rank exactly as the engine would. Ties rank by rowid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

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
    k: int
    where: str = "1 = 1"
    params: tuple[Any, ...] = ()


class FullText:
    # Whether a row's share of a word depends on that row alone (not on counts over the whole corpus):
    # then kept shares stay right when other rows change.
    shares_are_local = False

    def create(self, conn: Conn, table: TextTable) -> None:
        """Create the index and whatever keeps it in step with the table (a migration step)."""
        raise NotImplementedError

    def rank_terms(self, conn: Conn, words: Sequence[str]) -> tuple[list[str], float]:
        """The words whose shares add up to a row's relevance for ``words``, and the factor on their sum."""
        return list(words), 1.0

    def word_scores(self, conn: Conn, table: TextTable, word: str) -> list[tuple[int, float]]:
        """(rowid, share of relevance) of every row holding ``word``."""
        raise NotImplementedError

    def row_scores(
        self, conn: Conn, table: TextTable, words: Sequence[str], rowids: Sequence[int]
    ) -> list[tuple[int, int, float]]:
        """(index into ``words``, rowid, share) of each of ``words`` in each of ``rowids`` holding it (asked
        only where :attr:`shares_are_local`)."""
        raise NotImplementedError

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        """The ``q.k`` best (rowid, relevance) among rows passing ``q.where``, best first."""
        raise NotImplementedError


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

    def word_scores(self, conn: Conn, table: TextTable, word: str) -> list[tuple[int, float]]:
        # bm25() of a query is the sum over its phrases of idf * tf * (k1 + 1) / (...), each phrase's term
        # computed alone: the score of a one-word query is that word's share, bit for bit.
        f = table.index
        rows = conn.all(f"SELECT rowid, -bm25({f}) FROM {f} WHERE {f} MATCH ?", (_fts5_any([word]),))
        return cast("list[tuple[int, float]]", rows)  # already ints and floats: a large list, not copied

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        f = table.index
        rows = conn.all(
            f"SELECT f.rowid, bm25({f}) AS s FROM {f} f JOIN {table.table} i ON i.{table.rowid} = f.rowid "
            f"WHERE {f} MATCH ? AND {q.where} ORDER BY s, f.rowid LIMIT ?",
            (_fts5_any(q.words), *q.params, q.k),
        )
        return [(int(rid), -float(s)) for rid, s in rows]


def _fts5_any(words: Sequence[str]) -> str:
    return " OR ".join(f'"{w}"' for w in words)


class TsVector(FullText):
    """A generated ``tsv`` column (English configuration) under a GIN index."""

    shares_are_local = True  # ts_rank without normalisation reads only the row's own tsvector

    def create(self, conn: Conn, table: TextTable) -> None:
        document = " || ' ' || ".join(f"coalesce({c}, '')" for c in table.columns)
        conn.execute(
            f"ALTER TABLE {table.table} ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('english', {document})) STORED"
        )
        conn.execute(f"CREATE INDEX {table.table}_tsv ON {table.table} USING GIN (tsv)")

    def rank_terms(self, conn: Conn, words: Sequence[str]) -> tuple[list[str], float]:
        # ts_rank (no normalisation) adds a share per distinct lexeme of the query a row holds and divides
        # the sum by how many distinct lexemes the query has; stop words have none.
        rows = conn.all(
            "SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(?::text[]) WITH ORDINALITY "
            "AS x(w, n) ORDER BY n",
            (list(words),),
        )
        kept: list[str] = []
        seen: set[str] = set()
        for word, lexemes in rows:
            if lexemes and not seen.intersection(lexemes):
                kept.append(str(word))
            seen.update(lexemes or ())
        return kept, 1.0 / max(len(seen), 1)

    def word_scores(self, conn: Conn, table: TextTable, word: str) -> list[tuple[int, float]]:
        rows = conn.all(
            f"SELECT i.{table.rowid}, ts_rank(i.tsv, q) FROM {table.table} i, to_tsquery('english', ?) q "
            "WHERE i.tsv @@ q",
            (_pg_term(word),),
        )
        return cast("list[tuple[int, float]]", rows)

    def row_scores(
        self, conn: Conn, table: TextTable, words: Sequence[str], rowids: Sequence[int]
    ) -> list[tuple[int, int, float]]:
        rows = conn.all(
            f"SELECT w.n - 1, i.{table.rowid}, ts_rank(i.tsv, to_tsquery('english', w.t)) "
            f"FROM unnest(?::text[]) WITH ORDINALITY AS w(t, n) JOIN {table.table} i "
            f"ON i.{table.rowid} = ANY(?) AND i.tsv @@ to_tsquery('english', w.t)",
            ([_pg_term(w) for w in words], list(rowids)),
        )
        return [(int(n), int(rid), float(s)) for n, rid, s in rows]

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        every = " | ".join(_pg_term(w) for w in q.words)
        rows = conn.all(
            f"SELECT i.{table.rowid}, ts_rank(i.tsv, q) AS s FROM {table.table} i, to_tsquery('english', ?) q "
            f"WHERE i.tsv @@ q AND {q.where} ORDER BY s DESC, i.{table.rowid} LIMIT ?",
            (every, *q.params, q.k),
        )
        return [(int(rid), float(s)) for rid, s in rows]


def _pg_term(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"
