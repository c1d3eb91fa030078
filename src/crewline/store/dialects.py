"""Everything that differs between SQLite and PostgreSQL, in one place.

SQL elsewhere is written once, with ``?`` placeholders and the common subset both engines accept
(``ON CONFLICT``, ``RETURNING``, ``DOUBLE PRECISION``); a dialect supplies what cannot be shared:
connecting, the placeholder style, how a write transaction begins, row locks (:class:`RowLock`), full-text
search (:attr:`Dialect.fulltext`, see :mod:`crewline.store.fulltext`), column types in DDL, percentiles
and time buckets for reports, how a table is stored along its key (:meth:`Dialect.cluster_on_key`), which
driver errors mean "the database is unreachable", and whether the database has pgvector
(:meth:`Dialect.vector_extension`, for :mod:`crewline.memory.ann`). Code outside ``store/`` asks these
hooks and never checks which dialect it is talking to.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import ConfigError
from .fulltext import Fts5, FullText, TsVector

__all__ = [
    "CLAIM",
    "FOR_UPDATE",
    "Dialect",
    "Percentiles",
    "PostgresDialect",
    "RowLock",
    "SqliteDialect",
    "dialect_for_url",
]


@dataclass(frozen=True)
class RowLock:
    """How a SELECT locks the rows it returns until commit (SQLite's single writer needs no row locks).

    ``skip_locked``: pass over rows another transaction holds instead of waiting (claimers);
    ``no_key``: a FOR NO KEY UPDATE lock, which does not block inserts of rows that reference these;
    ``of``: in a join, lock only the rows of this table alias.
    """

    skip_locked: bool = False
    no_key: bool = False
    of: str | None = None


FOR_UPDATE = RowLock()
CLAIM = RowLock(skip_locked=True)


@dataclass(frozen=True)
class Percentiles:
    """A grouped percentile query: ``SELECT group, p(f) for each fraction FROM table WHERE where GROUP BY
    group``, continuous (interpolated between neighbours, as PostgreSQL's ``percentile_cont``), over the
    rows whose ``value`` is not NULL. ``where`` may hold ``?`` placeholders; their parameters pass as is."""

    table: str
    value: str
    fractions: tuple[float, ...]
    where: str = "1 = 1"
    group: str = "''"


class Dialect:
    name: ClassVar[str]
    title: ClassVar[str]  # the engine's name in a message meant for people
    ddl_types: ClassVar[dict[str, str]]
    fulltext: ClassVar[FullText]

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Any:
        raise NotImplementedError

    def sql(self, text: str) -> str:
        """Translate portable SQL (``?`` placeholders, ``{blob}``-style DDL types) to this dialect."""
        return self._ddl(text)

    def _ddl(self, text: str) -> str:
        if "{" in text and text.lstrip()[:6].upper() in ("CREATE", "ALTER "):
            return text.format_map(self.ddl_types)
        return text

    # Whether statements can be sent without waiting for each answer (:meth:`pipeline`), so that a
    # whole transaction costs one round trip.
    pipelines: ClassVar[bool] = False

    def begin_write(self, raw: Any) -> None:
        raw.execute("BEGIN")

    def data_version(self, raw: Any) -> int | None:
        """Inside a write transaction of ``raw``: a number that differs from the one read in the
        connection's previous transaction whenever another connection committed in between (it may
        differ for other reasons; the connection's own commits leave it as it was); ``None`` where the
        engine cannot tell."""
        return None

    def connect_direct(self) -> Any:
        """A connection for writes made on the event loop (``store/direct.py``): its write transaction
        fails at once, instead of waiting, while another connection holds the write lock."""
        raise NotImplementedError

    async def connect_async(self) -> Any:
        """An asynchronous connection in autocommit (where the dialect pipelines, see ``store/direct.py``)."""
        raise NotImplementedError

    def pipeline(self, raw: Any) -> contextlib.AbstractContextManager[Any]:
        """Within this block statements are sent without waiting for their answers (where the driver
        can); reading a result waits, and leaving the block waits for all and raises the first error."""
        return contextlib.nullcontext()

    async def send_pipeline(self, aconn: Any, statements: Sequence[tuple[str, Any]]) -> None:
        """Send ``statements`` (translated SQL, parameters; no result read) on an asynchronous connection
        (:meth:`connect_async`) as one round trip; raises if any failed."""
        raise NotImplementedError

    def lock_rows_suffix(self, lock: RowLock) -> str:
        """Appended to a SELECT that must lock the rows it returns as ``lock`` says."""
        return ""

    def lock_key(self, raw: Any, key: str) -> None:
        """Serialise transactions that share ``key`` until commit (no-op where writes are serial)."""

    # Whether :meth:`copy_rows` streams rows in bulk (``Conn.insert_rows`` uses it outside a pipeline).
    copies: ClassVar[bool] = False

    def copy_rows(self, raw: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Stream ``rows`` into ``table``."""
        raise NotImplementedError

    def new_keys(self, raw: Any, table: str, column: str, count: int) -> list[int]:
        """The next ``count`` values of the serial ``column``, taken for rows the caller inserts with them."""
        raise NotImplementedError

    # Whether a write transaction's rows, inserted without their serial column, take the values
    # :meth:`new_keys` gave, in order (the engine numbers them itself and no one else inserts).
    keys_follow_inserts: ClassVar[bool] = False

    def is_unavailable(self, exc: BaseException) -> bool:
        return False

    def vector_extension(self, raw: Any, *, create: bool) -> str | None:
        """The version of pgvector in this database, created first with ``create`` where the server
        offers it and the role may; ``None`` without it (always, where the engine has no such thing)."""
        return None

    def cluster_on_key(self, raw: Any, table: str) -> None:
        """Store ``table``'s rows in its primary key's B-tree, where the engine keeps a table and its
        key apart only by choice (a migration asks this inside its transaction). PostgreSQL keeps every
        table in a heap beside its key's index, and ``CLUSTER`` orders it only once: nothing to do."""

    def percentiles_sql(self, q: Percentiles) -> str:
        """Portable fallback: number each group's values in order and interpolate between the two rows
        around each fraction's position (``1 + f * (n - 1)``), which is what ``percentile_cont`` does."""
        picks = ", ".join(_interpolated(f) for f in q.fractions)
        return (
            f"SELECT g, {picks} FROM (SELECT {q.group} AS g, {q.value} AS v, "
            "ROW_NUMBER() OVER w AS rn, COUNT(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) "
            f"AS n FROM {q.table} WHERE ({q.where}) AND {q.value} IS NOT NULL "
            f"WINDOW w AS (PARTITION BY {q.group} ORDER BY {q.value})) ranked GROUP BY g"
        )

    def time_bucket(self, column: str, seconds: int) -> str:
        """An integer: the start (Unix seconds, UTC) of the ``seconds``-wide bucket holding ``column``."""
        return f"(CAST({column} AS INTEGER) / {int(seconds)}) * {int(seconds)}"

    def safe_url(self) -> str:
        """The URL with any password removed, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


class SqliteDialect(Dialect):
    name = "sqlite"
    title = "SQLite"
    ddl_types = {"blob": "BLOB", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "DOUBLE PRECISION"}
    fulltext = Fts5()

    def __init__(self, url: str) -> None:
        super().__init__(url)
        raw = url[len("sqlite://") :]
        if raw in ("", "/:memory:", ":memory:"):
            raise ConfigError(
                "in-memory SQLite cannot be shared by workers; give a file: sqlite:///path/to/db"
            )
        # sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute (the usual convention).
        self.path = Path(unquote(raw[1:] if raw.startswith("/") else raw))

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA busy_timeout=30000")
        self._enable_wal(conn)
        # FULL: a commit is on disk when it returns, the durability the engine promises.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # A page cache of up to 64 MiB (SQLite's default is 2 MiB), filled only as pages are read: a
        # write that touches the full-text index and several B-trees re-reads fewer pages from the OS
        # (ingest at 100k chunks is ~15% faster).
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def connect_direct(self) -> sqlite3.Connection:
        conn = self.connect()
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, tolerating other processes opening a brand-new file at the same moment.

        Switching a fresh file's journal mode needs an exclusive lock, and SQLite answers "database is
        locked" at once (the busy handler is not consulted for it) when two processes race to do it — a
        worker and ``crewline run`` started together, say. Once the file is in WAL mode the setting sticks,
        so the pragma is only issued when the file is not already in WAL, and retried for up to 30 s.
        """
        deadline = time.monotonic() + 30.0
        delay = 0.005
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                    return
                # When the switch cannot be made the pragma answers with the mode still in force.
                if str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                    return
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"could not switch {self.path} to WAL mode; is it on a network file system?"
                    )
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def new_keys(self, raw: Any, table: str, column: str, count: int) -> list[int]:
        # Inside the write transaction no one else inserts: the keys after the largest the table has
        # had (AUTOINCREMENT never reuses one), which SQLite's own sequence then records.
        row = raw.execute(
            f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
            f"coalesce((SELECT max({column}) FROM {table}), 0))",
            (table,),
        ).fetchone()
        return list(range(int(row[0]) + 1, int(row[0]) + 1 + count))

    keys_follow_inserts = True  # AUTOINCREMENT: one past the largest key ever, row after row

    def begin_write(self, raw: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a claim never upgrades a read lock and deadlocks.
        raw.execute("BEGIN IMMEDIATE")

    def data_version(self, raw: Any) -> int | None:
        # Read under the write lock, so no other connection can commit before this transaction ends.
        return int(raw.execute("PRAGMA data_version").fetchone()[0])

    def cluster_on_key(self, raw: Any, table: str) -> None:
        # Rebuilt as a WITHOUT ROWID table: a row then lives in the key's B-tree alone, so writing one
        # changes one page, not a rowid page and an index page (a checkpointed step commits half the
        # WAL frames), and reading a key range reads the rows themselves. Done in place: the rows are
        # copied, the old table dropped with its indexes and triggers, which are made again after.
        sql = raw.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if sql is None or "WITHOUT ROWID" in sql[0].upper():
            return
        create = sql[0].rstrip()
        others = [
            r[0]
            for r in raw.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
                "AND sql IS NOT NULL",
                (table,),
            )
        ]
        columns = ", ".join(f'"{r[1]}"' for r in raw.execute(f'PRAGMA table_info("{table}")'))
        new = f"{table}__clustered"
        # The stored text is the table's definition as written (with columns added since): keep its body,
        # under the new name, and add the option after any the table already has.
        body = create[create.index("(") :]
        option = " WITHOUT ROWID" if body.endswith(")") else ", WITHOUT ROWID"
        raw.execute(f'CREATE TABLE "{new}" {body}{option}')
        raw.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{table}"')
        raw.execute(f'DROP TABLE "{table}"')
        raw.execute(f'ALTER TABLE "{new}" RENAME TO "{table}"')
        for other in others:
            raw.execute(other)

    def is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and (
            "unable to open" in str(exc) or "disk I/O" in str(exc)
        )


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg.

    Statements are prepared on the server where that saves planning (psycopg's after five runs of one
    query; the direct writes' at once, ``store/pg_pipeline.py``). A connection pooler in transaction
    mode (PgBouncer before 1.21, or without ``max_prepared_statements``) hands each transaction any
    server connection, where a statement prepared on another is missing: the URL's
    ``prepared_statements=off`` turns preparing off for every connection (the parameter is crewline's,
    taken out of the URL before it reaches libpq).
    """

    name = "postgresql"
    title = "PostgreSQL"
    ddl_types = {"blob": "BYTEA", "serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"}
    fulltext = TsVector()
    pipelines = True
    copies = True

    def __init__(self, url: str) -> None:
        url, self.prepares = _prepared_statements(url)
        super().__init__(url)

    def pipeline(self, raw: Any) -> contextlib.AbstractContextManager[Any]:
        return raw.pipeline()  # type: ignore[no-any-return]

    def connect(self) -> Any:
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ConfigError("PostgreSQL needs the psycopg driver: pip install 'crewline[postgres]'") from e
        url = self.url.replace("postgres://", "postgresql://", 1)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        if not self.prepares:
            conn.prepare_threshold = None
        return conn

    async def connect_async(self) -> Any:
        import psycopg

        url = self.url.replace("postgres://", "postgresql://", 1)
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
        if not self.prepares:
            conn.prepare_threshold = None
        return conn

    async def send_pipeline(self, aconn: Any, statements: Sequence[tuple[str, Any]]) -> None:
        from .pg_pipeline import send_pipeline  # psycopg is imported only where PostgreSQL is used

        await send_pipeline(aconn, statements, prepare=self.prepares)

    def sql(self, text: str) -> str:
        return self._ddl(text).replace("?", "%s")

    def copy_rows(self, raw: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def new_keys(self, raw: Any, table: str, column: str, count: int) -> list[int]:
        sequence = f"pg_get_serial_sequence('{table}', '{column}')"
        got = raw.execute(f"SELECT nextval({sequence}) FROM generate_series(1, %s)", (count,))
        return sorted(int(r[0]) for r in got.fetchall())

    def lock_rows_suffix(self, lock: RowLock) -> str:
        suffix = " FOR NO KEY UPDATE" if lock.no_key else " FOR UPDATE"
        if lock.of is not None:
            suffix += f" OF {lock.of}"
        return suffix + (" SKIP LOCKED" if lock.skip_locked else "")

    def lock_key(self, raw: Any, key: str) -> None:
        raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))

    def percentiles_sql(self, q: Percentiles) -> str:
        picks = ", ".join(
            f"percentile_cont({float(f)}) WITHIN GROUP (ORDER BY {q.value})" for f in q.fractions
        )
        return (
            f"SELECT {q.group} AS g, {picks} FROM {q.table} "
            f"WHERE ({q.where}) AND {q.value} IS NOT NULL GROUP BY g"
        )

    def time_bucket(self, column: str, seconds: int) -> str:
        # CAST to an integer rounds in PostgreSQL (it truncates in SQLite): floor first.
        return f"(CAST(FLOOR({column} / {int(seconds)}) AS BIGINT) * {int(seconds)})"

    def is_unavailable(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)

    def vector_extension(self, raw: Any, *, create: bool) -> str | None:
        import psycopg

        find = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        row = raw.execute(find).fetchone()
        if row is not None or not create:
            return None if row is None else str(row[0])
        offered = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        if raw.execute(offered).fetchone() is None:
            return None
        raw.execute("SAVEPOINT crewline_vector")
        try:
            raw.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error:  # not a superuser (pgvector is not a trusted extension): stay exact
            raw.execute("ROLLBACK TO SAVEPOINT crewline_vector")
            return None
        raw.execute("RELEASE SAVEPOINT crewline_vector")
        row = raw.execute(find).fetchone()
        return None if row is None else str(row[0])


_SWITCH = {
    "on": True,
    "true": True,
    "1": True,
    "yes": True,
    "off": False,
    "false": False,
    "0": False,
    "no": False,
}


def _prepared_statements(url: str) -> tuple[str, bool]:
    """``url`` without crewline's ``prepared_statements`` parameter, and whether it allows them."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    given = [value for key, value in pairs if key == "prepared_statements"]
    if not given:
        return url, True
    if len(given) > 1 or given[0].strip().lower() not in _SWITCH:
        raise ConfigError(
            f"the database URL's prepared_statements must be given once, as on or off (got "
            f"{', '.join(repr(v) for v in given)}); use prepared_statements=off behind a connection pooler "
            "in transaction mode, such as PgBouncer"
        )
    rest = urlencode([(k, v) for k, v in pairs if k != "prepared_statements"], quote_via=quote)
    return parts._replace(query=rest).geturl(), _SWITCH[given[0].strip().lower()]


def _interpolated(fraction: float) -> str:
    pos = f"(1 + {float(fraction)} * (n - 1))"
    low = f"CAST({pos} AS INTEGER)"  # a floor: the position is never negative
    at_low = f"MAX(CASE WHEN rn = {low} THEN v END)"
    at_high = f"COALESCE(MAX(CASE WHEN rn = {low} + 1 THEN v END), {at_low})"
    return f"{at_low} + MAX(CASE WHEN rn = {low} THEN {pos} - {low} END) * ({at_high} - {at_low})"


def dialect_for_url(url: str) -> Dialect:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SqliteDialect(url)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return PostgresDialect(url.replace("postgresql+psycopg://", "postgresql://", 1))
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path/to/file.db or postgresql://user@host/db"
    )
