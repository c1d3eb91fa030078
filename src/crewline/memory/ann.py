"""pgvector's HNSW index: the vector side of search on PostgreSQL where the ``vector`` extension exists.

``[memory] vector_index`` picks the side: ``"auto"`` (the default) uses HNSW when pgvector is installed
in the database (``CREATE EXTENSION vector``, an operator's deliberate act) and the exact in-process index
(:class:`~.vectors.ExactIndex`) otherwise; ``"hnsw"`` creates the extension where the server offers it and
the role may, and fails without it; ``"exact"`` never uses it. HNSW is approximate (see bench/README.md
for its recall on the bench corpus): what it buys is that no process holds every vector in memory. This module owns ``memory_vectors``: one ``vector(dim)`` row per embedded item with its
scope and expiry, kept by triggers on ``memory_items`` in the transaction that writes the item, so a
rollback, a forget, a purge or a failed ingest can never leave it out of step (the embedding itself stays
a little-endian float32 blob in ``memory_items``, read by the triggers with :data:`_F4LE`). The table is set
up at run time rather than by a migration because its width is the configured embedder's, and because
the extension may be installed after the schema was. A search is one ``ORDER BY embedding <=> q`` over the
HNSW (cosine) index with the scope and expiry in its ``WHERE``; pgvector's iterative scan
(``hnsw.iterative_scan``, 0.8+) keeps walking the graph until enough rows pass those filters, so a small
scope among millions is not starved; ``hnsw.ef_search`` (``[memory] hnsw_ef_search``, at least the number
of candidates asked for) trades latency for recall.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..store.database import Conn
from . import versions as v

__all__ = ["MODES", "HnswIndex", "VectorSettings", "enable_hnsw", "vector_settings"]

MODES = ("auto", "hnsw", "exact")
EF_SEARCH = 100
_MAX_EF = 1000  # pgvector's upper bound for hnsw.ef_search

# float32 little-endian bytes -> real[], bit by bit (sign, exponent, mantissa): PostgreSQL has no cast
# that reinterprets bytes, and the blob format is the one both dialects store.
_F4LE = """CREATE OR REPLACE FUNCTION crewline_f4le(b bytea) RETURNS real[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $f$
SELECT array_agg(CASE WHEN e = 0 THEN (1 - 2 * s) * m * 2::float8 ^ -149
                      ELSE (1 - 2 * s) * (8388608 + m) * 2::float8 ^ (e - 150) END ORDER BY i)::real[]
FROM (SELECT i, get_byte(b, 4 * i + 3) >> 7 AS s,
             ((get_byte(b, 4 * i + 3) & 127) << 1) | (get_byte(b, 4 * i + 2) >> 7) AS e,
             ((get_byte(b, 4 * i + 2) & 127) << 16) | (get_byte(b, 4 * i + 1) << 8) | get_byte(b, 4 * i) AS m
      FROM generate_series(0, length(b) / 4 - 1) AS i) AS f
$f$"""

# TG_ARGV[0] is the width: a blob of another width (an item embedded by a previous model, before
# `crewline memory reembed` reaches it) has no row, as the exact index skips it too.
_SYNC = """CREATE OR REPLACE FUNCTION crewline_memory_vectors_sync() RETURNS trigger
LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM memory_vectors WHERE rid = OLD.rid;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.embedding IS NOT NULL
            AND length(NEW.embedding) = 4 * TG_ARGV[0]::int THEN
        INSERT INTO memory_vectors (rid, scope, expires_at, embedding)
        VALUES (NEW.rid, NEW.scope, NEW.expires_at, crewline_f4le(NEW.embedding)::vector);
    END IF;
    RETURN NULL;
END
$f$"""

_SETTINGS_BEFORE_0_8 = "SELECT set_config('hnsw.ef_search', ?, false)"
_SETTINGS = _SETTINGS_BEFORE_0_8 + ", set_config('hnsw.iterative_scan', 'relaxed_order', false)"

_TRIGGERS = ("memory_vectors_insert", "memory_vectors_update", "memory_vectors_delete")


@dataclass(frozen=True)
class VectorSettings:
    """``[memory] vector_index`` and ``hnsw_ef_search``."""

    mode: str = "auto"
    ef_search: int = EF_SEARCH


def vector_settings(section: Mapping[str, Any] | None) -> VectorSettings:
    """The vector-index settings of a ``[memory]`` table; a :class:`ConfigError` names a bad value."""
    section = section or {}
    mode = section.get("vector_index", "auto")
    if mode not in MODES:
        raise ConfigError(f"[memory] vector_index must be one of {', '.join(MODES)}; got {mode!r}")
    ef = section.get("hnsw_ef_search", EF_SEARCH)
    if isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= _MAX_EF:
        raise ConfigError(f"[memory] hnsw_ef_search must be a whole number from 1 to {_MAX_EF}; got {ef!r}")
    return VectorSettings(str(mode), ef)


def enable_hnsw(conn: Conn, dim: int, settings: VectorSettings) -> HnswIndex | None:
    """Inside a write: the HNSW index for vectors of ``dim``, set up (or rebuilt for a new width) if the
    database has pgvector; ``None`` where it does not (``"hnsw"`` mode raises instead) or is not wanted."""
    if settings.mode == "exact":
        return None
    conn.lock_key("memory:vectors")  # one process sets it up; the others wait and find it done
    version = conn.dialect.vector_extension(conn.raw, create=settings.mode == "hnsw")
    if version is None:
        if settings.mode == "hnsw":
            raise ConfigError(
                '[memory] vector_index = "hnsw" needs PostgreSQL with the pgvector extension '
                '(CREATE EXTENSION vector, as a superuser); use "auto" to fall back to the exact index'
            )
        return None
    if _width(conn) != dim:
        _create(conn, dim)
    return HnswIndex(dim, settings.ef_search, iterative=_release(version) >= (0, 8))


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])


def _width(conn: Conn) -> int | None:
    typmod = conn.scalar(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass('memory_vectors') "
        "AND attname = 'embedding'"
    )
    return None if typmod is None else int(typmod)


def _create(conn: Conn, dim: int) -> None:
    """(Re)create the table at width ``dim``, fill it from the items, index it, hook the triggers."""
    dim = int(dim)
    conn.execute("DROP TABLE IF EXISTS memory_vectors")
    conn.execute(_F4LE)
    conn.execute(_SYNC)
    conn.execute(
        "CREATE TABLE memory_vectors (rid BIGINT PRIMARY KEY, scope TEXT NOT NULL, "
        f"expires_at DOUBLE PRECISION, embedding vector({dim}) NOT NULL)"
    )
    conn.execute(
        "INSERT INTO memory_vectors (rid, scope, expires_at, embedding) "
        "SELECT rid, scope, expires_at, crewline_f4le(embedding)::vector "
        f"FROM ({v.embedded_of_width(dim)}) AS items"
    )
    conn.execute("CREATE INDEX memory_vectors_scope ON memory_vectors (scope)")
    conn.execute(
        "CREATE INDEX memory_vectors_hnsw ON memory_vectors USING hnsw (embedding vector_cosine_ops)"
    )
    for name in _TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name} ON memory_items")
    call = f"EXECUTE FUNCTION crewline_memory_vectors_sync('{dim}')"
    conn.execute(f"CREATE TRIGGER memory_vectors_insert AFTER INSERT ON memory_items FOR EACH ROW {call}")
    conn.execute(
        "CREATE TRIGGER memory_vectors_update AFTER UPDATE ON memory_items FOR EACH ROW "
        "WHEN (OLD.embedding IS DISTINCT FROM NEW.embedding OR OLD.scope IS DISTINCT FROM NEW.scope "
        f"OR OLD.expires_at IS DISTINCT FROM NEW.expires_at) {call}"
    )
    conn.execute(f"CREATE TRIGGER memory_vectors_delete AFTER DELETE ON memory_items FOR EACH ROW {call}")


def literal(vector: NDArray[np.float32]) -> str:
    """pgvector's text form of ``vector``."""
    return "[" + ",".join(f"{float(x):.8g}" for x in vector) + "]"


class HnswIndex:
    """The vector side over ``memory_vectors``: nothing to load or follow, the database keeps it."""

    def __init__(self, dim: int, ef_search: int = EF_SEARCH, *, iterative: bool = True) -> None:
        self.dim = dim
        self.ef_search = ef_search
        self.iterative = iterative  # pgvector 0.8+; before it a filter can only thin ef_search's beam

    def synced(self, conn: Conn) -> HnswSearch:
        return HnswSearch(conn, self.ef_search, self.iterative)

    def reset(self) -> None:
        """Nothing cached in the process."""


class HnswSearch:
    """One connection's searches over the HNSW index (what :class:`~.vectors.VectorSearch` asks)."""

    def __init__(self, conn: Conn, ef_search: int, iterative: bool = True) -> None:
        self.conn = conn
        self.ef_search = ef_search
        self.iterative = iterative

    def search(
        self, query: NDArray[np.float32], scopes: Sequence[str], k: int, *, now: float | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best (rid, cosine) among live rows of ``scopes``, best first."""
        if k <= 0 or not scopes:
            return []
        ef = min(_MAX_EF, max(self.ef_search, k))
        # Session settings (reads run in autocommit, where SET LOCAL would not outlive its statement).
        # pgvector reserves the hnsw. prefix: naming a setting older releases lack is an error.
        self.conn.execute(_SETTINGS if self.iterative else _SETTINGS_BEFORE_0_8, (str(ef),))
        # relaxed_order may return near neighbours slightly out of order: sort the few found again.
        rows = self.conn.all(
            "WITH c AS MATERIALIZED (SELECT rid, embedding <=> CAST(? AS vector) AS d FROM memory_vectors "
            "WHERE scope = ANY(?) AND (expires_at IS NULL OR expires_at > ?) ORDER BY d LIMIT ?) "
            "SELECT rid, 1 - d FROM c ORDER BY d, rid",
            (literal(query), list(scopes), time.time() if now is None else now, k),
        )
        return [(int(rid), float(cos)) for rid, cos in rows]

    def allowed(self, rids: Sequence[int], scopes: Sequence[str], now: float) -> list[bool]:
        """Whether each rid is a live item of ``scopes``."""
        if not rids or not scopes:
            return [False] * len(rids)
        live = v.live_rids(self.conn, rids, scopes, now)
        return [int(rid) in live for rid in rids]
