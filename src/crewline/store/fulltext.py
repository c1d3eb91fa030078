"""Full-text search, the dialect hook: FTS5 with BM25 on SQLite, a ``tsvector`` with ``ts_rank`` on PostgreSQL.

A component describes the table it searches (:class:`TextTable`) and asks ``conn.dialect.fulltext`` to
create the index in a migration, rank the rows matching a query ("any of these words"), or give what a
caller needs to rank in process: each term's postings (one row-local number per row holding it) and the
corpus-wide statistics. Both engines' relevance of an "any of these words" query is a sum over its terms
(:meth:`FullText.rank_terms` says which terms and the factor on the sum), so a caller that keeps postings
and statistics up to date row by row (nothing kept goes stale when another row changes) ranks exactly as
the engine would. Ties rank by rowid.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from .database import Conn

__all__ = ["Fts5", "Fts5Statistics", "FullText", "Postings", "TextQuery", "TextTable", "TsVector"]


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
    """What a dialect keeps per (term, row) in process and how it turns that into relevance.

    A *term* is what :meth:`rank_terms` makes of a query word; a term's *postings* are the rows holding it
    with one number per row that depends on that row alone (a term frequency, or a share already ranked);
    :meth:`statistics` is what the relevance needs from the whole corpus (``None`` where it needs nothing),
    and :meth:`shares` turns postings into each row's share of the relevance. A caller keeping postings
    and statistics up to date row by row ranks as the engine would."""

    def create(self, conn: Conn, table: TextTable) -> None:
        """Create the index and whatever keeps it in step with the table's updates and deletes (a
        migration step); the table's owner reports its inserts (:meth:`rows_added`)."""
        raise NotImplementedError

    def rows_added(self, conn: Conn, table: TextTable, keys: Sequence[int]) -> None:
        """Index the rows just inserted with ``keys`` (ascending); nothing where the index keeps itself
        in step with the table."""

    def drop_insert_trigger(self, conn: Conn, table: TextTable) -> None:
        """Stop indexing each row as it is inserted, where a trigger did (:meth:`rows_added` does it)."""

    def rank_terms(self, conn: Conn, words: Sequence[str]) -> tuple[list[str], float]:
        """The terms whose shares add up to a row's relevance for ``words``, and the factor on their sum."""
        return list(words), 1.0

    def postings(self, conn: Conn, table: TextTable, term: str) -> Postings:
        """Every row holding ``term``, by rowid ascending, with its row-local number."""
        raise NotImplementedError

    def row_postings(
        self, conn: Conn, table: TextTable, terms: Sequence[str], rowids: Sequence[int]
    ) -> list[tuple[int, int, float]]:
        """(index into ``terms``, rowid, row-local number) of each of ``terms`` in each of ``rowids``."""
        raise NotImplementedError

    def statistics(
        self, conn: Conn, table: TextTable, kept: Any = None, rowids: Sequence[int] | None = None
    ) -> Any:
        """The corpus-wide figures :meth:`shares` needs: read whole (``rowids`` None), or ``kept`` brought
        up to date after ``rowids`` changed."""
        return None

    def shares(self, postings: Postings, statistics: Any) -> NDArray[np.float64]:
        """Each posting row's share of the relevance of its term."""
        import numpy as np  # deferred: the CLI starts without numpy

        return postings.values.astype(np.float64)

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        """The ``q.k`` best (rowid, relevance) among rows passing ``q.where``, best first."""
        raise NotImplementedError


@dataclass(frozen=True)
class Postings:
    rowids: NDArray[np.int64]
    values: NDArray[np.float32]

    @classmethod
    def of(cls, rows: Sequence[tuple[int, float]]) -> Postings:
        import numpy as np  # deferred: the CLI starts without numpy

        rowids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        values = np.fromiter((x for _, x in rows), dtype=np.float32, count=len(rows))
        order = np.argsort(rowids, kind="stable")
        return cls(rowids[order], values[order])


@dataclass
class Fts5Statistics:
    """FTS5's figures for BM25: rows in the index, tokens in them, and each row's token count by rowid."""

    rows: int
    tokens: int
    lengths: NDArray[np.float64]


_K1, _B = 1.2, 0.75  # FTS5's bm25() constants


class Fts5(FullText):
    """An external-content FTS5 table, ranked by BM25, kept in step by triggers on updates and deletes
    and by one statement per insert of many rows (:meth:`rows_added`): FTS5 writes its pending terms
    out at the end of every statement a trigger runs in, so a trigger per row made a bulk insert write
    a segment per statement of rows, and merge them after, for a tenth more time in all.

    A term is a token of the index (query words go through the index's own tokenizer, so "running" is
    "run"); its postings are token frequencies read from an ``fts5vocab`` view of the index, and the
    statistics are the index's row count, token count and per-row lengths (its ``_data`` averages record
    and ``_docsize`` table). :meth:`shares` is FTS5's ``bm25()`` arithmetic operation for operation, so the
    sum of a row's shares is the engine's score bit for bit."""

    def create(self, conn: Conn, table: TextTable) -> None:
        t, cols = table.table, ", ".join(table.columns)
        new = ", ".join(f"new.{c}" for c in table.columns)
        old = ", ".join(f"old.{c}" for c in table.columns)
        delete = f"INSERT INTO {table.index} ({table.index}, rowid, {cols}) VALUES ('delete', old.{table.rowid}, {old});"
        insert = f"INSERT INTO {table.index} (rowid, {cols}) VALUES (new.{table.rowid}, {new});"
        for sql in (
            f"CREATE VIRTUAL TABLE {table.index} USING fts5({cols}, content='{t}', "
            f"content_rowid='{table.rowid}', tokenize='{_TOKENIZER}')",
            f"CREATE TRIGGER {t}_fts_delete AFTER DELETE ON {t} BEGIN {delete} END",
            f"CREATE TRIGGER {t}_fts_update AFTER UPDATE OF {cols} ON {t} BEGIN {delete} {insert} END",
        ):
            conn.execute(sql)

    def rows_added(self, conn: Conn, table: TextTable, keys: Sequence[int]) -> None:
        cols = ", ".join(table.columns)
        add = (
            f"INSERT INTO {table.index} (rowid, {cols}) SELECT {table.rowid}, {cols} FROM {table.table} "
            f"WHERE {table.rowid} BETWEEN ? AND ?"
        )
        first = 0
        for i in range(1, len(keys) + 1):  # a statement per run of consecutive keys (a bulk insert's: one)
            if i == len(keys) or keys[i] != keys[i - 1] + 1:
                conn.execute(add, (keys[first], keys[i - 1]))
                first = i

    def drop_insert_trigger(self, conn: Conn, table: TextTable) -> None:
        conn.execute(f"DROP TRIGGER IF EXISTS {table.table}_fts_insert")

    def rank_terms(self, conn: Conn, words: Sequence[str]) -> tuple[list[str], float]:
        # "a" OR "b" sums one bm25 share per phrase, repeats included; a word the tokenizer cuts in two
        # counts as its parts.
        return [t for w in words for t in _word_tokens(w)], 1.0

    def postings(self, conn: Conn, table: TextTable, term: str) -> Postings:
        import numpy as np  # deferred: the CLI starts without numpy

        docs = np.array(_vocabulary(conn, table).execute(_INSTANCES.format(table.index), (term,)).fetchall())
        docs = docs.reshape(-1).astype(np.int64)  # one row per occurrence, by rowid then position
        if len(docs) and np.any(docs[1:] < docs[:-1]):
            docs = np.sort(docs, kind="stable")
        starts = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1]))) if len(docs) else docs
        counts = np.diff(np.append(starts, len(docs)))
        return Postings(docs[starts], counts.astype(np.float32))

    def row_postings(
        self, conn: Conn, table: TextTable, terms: Sequence[str], rowids: Sequence[int]
    ) -> list[tuple[int, int, float]]:
        if not terms or not rowids:
            return []
        texts = " || ' ' || ".join(f"coalesce({c}, '')" for c in table.columns)
        marks = ",".join("?" * len(rowids))
        rows = conn.execute(
            f"SELECT {table.rowid}, {texts} FROM {table.table} WHERE {table.rowid} IN ({marks})", list(rowids)
        ).fetchall()
        where = {t: i for i, t in enumerate(terms)}
        out: list[tuple[int, int, float]] = []
        for rowid, counts in _scratch().frequencies(rows):
            out.extend((where[t], rowid, float(n)) for t, n in counts.items() if t in where)
        return out

    def statistics(
        self, conn: Conn, table: TextTable, kept: Any = None, rowids: Sequence[int] | None = None
    ) -> Fts5Statistics:
        import numpy as np

        block = conn.scalar(f"SELECT block FROM {table.index}_data WHERE id = 1")
        totals = _varints(bytes(block)) if block else [0]
        if rowids is None or not isinstance(kept, Fts5Statistics):
            sizes = conn.execute(f"SELECT id, sz FROM {table.index}_docsize").fetchall()
            lengths = np.zeros(max((r for r, _ in sizes), default=0) + 1, dtype=np.float64)
        else:
            marks = ",".join("?" * len(rowids))
            sizes = conn.execute(
                f"SELECT id, sz FROM {table.index}_docsize WHERE id IN ({marks})", list(rowids)
            ).fetchall()
            lengths = kept.lengths
            top = max([*rowids, *(r for r, _ in sizes)], default=0)
            if top >= len(lengths):
                lengths = np.concatenate([lengths, np.zeros(top + 1 - len(lengths) + len(lengths) // 4)])
            else:
                lengths = lengths.copy()  # a search may be reading the old array
            lengths[np.asarray(rowids, dtype=np.int64)] = 0.0
        for rowid, size in sizes:
            lengths[rowid] = sum(_varints(bytes(size)))
        return Fts5Statistics(int(totals[0]), int(sum(totals[1:])), lengths)

    def shares(self, postings: Postings, statistics: Any) -> NDArray[np.float64]:
        import numpy as np

        s = statistics
        n = len(postings.rowids)
        if not isinstance(s, Fts5Statistics) or not n or s.rows <= 0:
            return np.zeros(n, dtype=np.float64)
        idf = math.log((s.rows - n + 0.5) / (n + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        avgdl = s.tokens / s.rows
        rowids = postings.rowids
        inside = rowids < len(s.lengths)  # a row written after the statistics were read counts as empty
        dl = np.where(inside, s.lengths[np.minimum(rowids, len(s.lengths) - 1)], 0.0)
        tf = postings.values.astype(np.float64)
        # fts5_aux.c: idf * ((f * (k1 + 1)) / (f + k1 * (1 - b + b * D / avgdl))), in that order.
        return idf * ((tf * (_K1 + 1.0)) / (tf + _K1 * (1 - _B + _B * dl / avgdl)))

    def search(self, conn: Conn, table: TextTable, q: TextQuery) -> list[tuple[int, float]]:
        f = table.index
        rows = conn.all(
            f"SELECT f.rowid, bm25({f}) AS s FROM {f} f JOIN {table.table} i ON i.{table.rowid} = f.rowid "
            f"WHERE {f} MATCH ? AND {q.where} ORDER BY s, f.rowid LIMIT ?",
            (_fts5_any(q.words), *q.params, q.k),
        )
        return [(int(rid), -float(s)) for rid, s in rows]


_TOKENIZER = "porter unicode61"
_INSTANCES = "SELECT doc FROM temp.{0}_instances WHERE term = ?"


def _vocabulary(conn: Conn, table: TextTable) -> Any:
    """The raw connection, with a per-connection ``fts5vocab`` view of ``table``'s index (instances)."""
    raw = conn.raw
    raw.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{table.index}_instances "
        f"USING fts5vocab(main, {table.index}, instance)"
    )
    return raw


def _varints(data: bytes) -> list[int]:
    """SQLite's variable-length integers (big-endian, seven bits a byte; a ninth byte gives eight)."""
    out: list[int] = []
    i = 0
    while i < len(data):
        value = 0
        for j in range(9):
            byte = data[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        out.append(value)
    return out


class _Scratch:
    """An in-memory FTS5 table with the index's tokenizer: the tokens the index makes of a text."""

    def __init__(self) -> None:
        import sqlite3

        self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.db.execute(f"CREATE VIRTUAL TABLE scratch_text USING fts5(x, tokenize='{_TOKENIZER}')")
        self.db.execute("CREATE VIRTUAL TABLE scratch_tokens USING fts5vocab(scratch_text, instance)")
        self.lock = threading.Lock()

    def _occurrences(self, rows: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        """(key, token) of every token of each (key, text) of ``rows``, in order; nothing stays stored."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany("INSERT INTO scratch_text (rowid, x) VALUES (?, ?)", rows)
                found = self.db.execute("SELECT doc, term FROM scratch_tokens ORDER BY doc, offset")
                return [(int(key), str(term)) for key, term in found.fetchall()]
            finally:
                self.db.execute("ROLLBACK")

    def frequencies(self, rows: Sequence[tuple[int, str]]) -> list[tuple[int, dict[str, int]]]:
        """(key, {token: occurrences}) for each (key, text) of ``rows``."""
        counts: dict[int, dict[str, int]] = {key: {} for key, _ in rows}
        for key, term in self._occurrences(rows):
            held = counts[key]
            held[term] = held.get(term, 0) + 1
        return list(counts.items())

    def tokens(self, text: str) -> list[str]:
        return [term for _, term in self._occurrences([(1, text)])]


@functools.cache
def _scratch() -> _Scratch:
    return _Scratch()


@functools.lru_cache(maxsize=1 << 16)
def _word_tokens(word: str) -> tuple[str, ...]:
    return tuple(_scratch().tokens(word))


def _fts5_any(words: Sequence[str]) -> str:
    return " OR ".join(f'"{w}"' for w in words)


class TsVector(FullText):
    """A generated ``tsv`` column (English configuration) under a GIN index."""

    # ts_rank without normalisation reads only the row's own tsvector: the postings hold the shares
    # themselves (float4, as PostgreSQL computes them) and there are no statistics.

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
        known = {w: _LEXEMES.get(w) for w in words}
        missing = [w for w, lexemes in known.items() if lexemes is None]
        if missing:
            rows = conn.all(
                "SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(?::text[]) AS x(w)",
                (missing,),
            )
            if len(_LEXEMES) + len(rows) > _LEXEMES_KEPT:
                _LEXEMES.clear()
            for w, lexemes in rows:
                known[str(w)] = _LEXEMES[str(w)] = tuple(lexemes or ())
        kept: list[str] = []
        seen: set[str] = set()
        for word in words:
            lexemes = known.get(word) or ()
            if lexemes and not seen.intersection(lexemes):
                kept.append(word)
            seen.update(lexemes)
        return kept, 1.0 / max(len(seen), 1)

    def postings(self, conn: Conn, table: TextTable, term: str) -> Postings:
        rows = conn.execute(
            f"SELECT i.{table.rowid}, ts_rank(i.tsv, q) FROM {table.table} i, to_tsquery('english', ?) q "
            "WHERE i.tsv @@ q",
            (_pg_term(term),),
        ).fetchall()
        return Postings.of(rows)

    def row_postings(
        self, conn: Conn, table: TextTable, terms: Sequence[str], rowids: Sequence[int]
    ) -> list[tuple[int, int, float]]:
        rows = conn.all(
            f"SELECT w.n - 1, i.{table.rowid}, ts_rank(i.tsv, to_tsquery('english', w.t)) "
            f"FROM unnest(?::text[]) WITH ORDINALITY AS w(t, n) JOIN {table.table} i "
            f"ON i.{table.rowid} = ANY(?) AND i.tsv @@ to_tsquery('english', w.t)",
            ([_pg_term(w) for w in terms], list(rowids)),
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


# Each word's lexemes under the English configuration, asked once per process (a query's words are
# mostly words seen before); dropped whole when full.
_LEXEMES: dict[str, tuple[str, ...]] = {}
_LEXEMES_KEPT = 1 << 16


def _pg_term(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"
