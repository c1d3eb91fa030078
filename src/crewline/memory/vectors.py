"""The vector index: exact cosine search over an in-process matrix that follows the database.

Vectors live in ``memory_items.embedding`` (written in the same transaction as their item, so a rollback,
a forget or a failed ingest can never leave the index out of step). Each process keeps a float32 matrix of
them, loaded once and then brought up to date before every search from ``memory_changes``, a feed of
touched rows (:mod:`.feed`). Search is one matrix-vector product over the rows allowed by the scope mask:
exact (recall 1.0, and filters never starve it the way they starve a graph index), and at 100k chunks of
64 dimensions a few milliseconds on two cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..store.database import Conn
from . import versions as v
from .embedders import Matrix
from .feed import FeedCursor
from .topk import largest

__all__ = ["ExactIndex", "VectorIndex", "VectorSearch", "from_blob", "to_blob"]

_BATCH = 500


class VectorSearch(Protocol):
    """The vector side of a search: this exact index, or pgvector's HNSW (:mod:`.ann`) on a connection."""

    def search(
        self, query: NDArray[np.float32], scopes: Sequence[str], k: int, *, now: float | None = None
    ) -> list[tuple[int, float]]: ...

    def allowed(self, rids: Sequence[int], scopes: Sequence[str], now: float) -> list[bool]: ...


class VectorIndex(Protocol):
    """What a memory store keeps: brought up to date for (or bound to) a connection before a search."""

    def synced(self, conn: Conn) -> VectorSearch: ...

    def reset(self) -> None: ...


def to_blob(vector: NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def to_blobs(matrix: NDArray[np.float32]) -> list[bytes]:
    """:func:`to_blob` of each row of ``matrix``, converted in one go."""
    rows = np.ascontiguousarray(matrix, dtype="<f4")
    data, size = rows.tobytes(), rows.shape[1] * 4 if rows.ndim == 2 else 0
    return [data[i : i + size] for i in range(0, len(data), size)] if size else []


def from_blob(data: bytes | memoryview) -> NDArray[np.float32]:
    return np.frombuffer(bytes(data), dtype="<f4")


_FEW_OTHERS = 1024


class ExactIndex:
    """Rows of (item rid, scope, expiry, unit vector); ``search`` returns the best rids with cosines."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        # Stored transposed (dim x capacity): a query is then one pass over contiguous memory.
        self._mat: Matrix = np.zeros((dim, 1024), dtype=np.float32)
        self._rids = np.zeros(1024, dtype=np.int64)
        self._scopes = np.zeros(1024, dtype=np.int32)
        self._expires = np.full(1024, np.inf)
        self._n = 0
        self._row: dict[int, int] = {}
        self._scope_code: dict[str, int] = {}
        self._scope_rows: dict[int, int] = {}  # rows per scope code, to skip the mask when all match
        self._expiring = 0  # rows with a TTL, to skip the expiry mask when there are none
        self._feed = FeedCursor()

    def __len__(self) -> int:
        return self._n

    # -- following the database ------------------------------------------------------------------------

    def sync(self, conn: Conn) -> None:
        with self._lock:
            changed = self._feed.changed(conn)
            if changed is None:
                self._load_all(conn)
            elif changed:
                self._refresh(conn, changed)

    def synced(self, conn: Conn) -> ExactIndex:
        self.sync(conn)
        return self

    def reset(self) -> None:
        with self._lock:
            self._feed.reset()
            self._n = 0
            self._row.clear()
            self._scope_rows.clear()
            self._expiring = 0

    def _load_all(self, conn: Conn) -> None:
        self._n = 0
        self._row.clear()
        self._scope_rows.clear()
        self._expiring = 0
        cur = v.embeddings(conn)
        while True:
            batch = cur.fetchmany(5000)
            if not batch:
                break
            for rid, scope, expires, emb in batch:
                self._put(int(rid), scope, expires, from_blob(emb))

    def _refresh(self, conn: Conn, rids: set[int]) -> None:
        ordered = sorted(rids)
        for i in range(0, len(ordered), _BATCH):
            part = ordered[i : i + _BATCH]
            found = v.embeddings(conn, part).fetchall()
            present = set()
            for rid, scope, expires, emb in found:
                if emb is None:
                    continue
                present.add(int(rid))
                self._put(int(rid), scope, expires, from_blob(emb))
            for rid in part:
                if rid not in present:
                    self._remove(rid)

    # -- the matrix ------------------------------------------------------------------------------------

    def _code(self, scope: str) -> int:
        code = self._scope_code.get(scope)
        if code is None:
            code = self._scope_code[scope] = len(self._scope_code)
        return code

    def _put(self, rid: int, scope: str, expires: float | None, vec: NDArray[np.float32]) -> None:
        if vec.shape[0] != self.dim:
            return  # written by another embedder; reembed will bring it back
        row = self._row.get(rid)
        if row is None:
            if self._n == len(self._rids):
                self._grow()
            row = self._n
            self._n += 1
            self._row[rid] = row
            self._rids[row] = rid
        else:
            self._forget_row(row)
        code = self._code(scope)
        self._mat[:, row] = vec
        self._scopes[row] = code
        self._expires[row] = np.inf if expires is None else float(expires)
        self._scope_rows[code] = self._scope_rows.get(code, 0) + 1
        self._expiring += expires is not None

    def _forget_row(self, row: int) -> None:
        code = int(self._scopes[row])
        self._scope_rows[code] -= 1
        self._expiring -= bool(np.isfinite(self._expires[row]))

    def _remove(self, rid: int) -> None:
        row = self._row.pop(rid, None)
        if row is None:
            return
        self._forget_row(row)
        last = self._n - 1
        if row != last:
            moved = int(self._rids[last])
            self._mat[:, row] = self._mat[:, last]
            self._rids[row] = moved
            self._scopes[row] = self._scopes[last]
            self._expires[row] = self._expires[last]
            self._row[moved] = row
        self._n = last

    def _grow(self) -> None:
        cap = len(self._rids) * 2
        mat = np.zeros((self.dim, cap), dtype=np.float32)
        mat[:, : self._n] = self._mat[:, : self._n]
        self._mat = mat
        self._rids = np.resize(self._rids, cap)
        self._scopes = np.resize(self._scopes, cap)
        self._expires = np.resize(self._expires, cap)

    # -- search ----------------------------------------------------------------------------------------

    def allowed(self, rids: Sequence[int], scopes: Sequence[str], now: float) -> list[bool]:
        """Whether each rid is a live item of ``scopes`` (unknown rids are not)."""
        codes = {self._scope_code[s] for s in scopes if s in self._scope_code}
        with self._lock:
            out = []
            for rid in rids:
                row = self._row.get(rid)
                out.append(row is not None and int(self._scopes[row]) in codes and self._expires[row] > now)
            return out

    def search(
        self, query: NDArray[np.float32], scopes: Sequence[str], k: int, *, now: float | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best (rid, cosine) among live rows of ``scopes``, best first."""
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return []
            codes = [self._scope_code[s] for s in scopes if s in self._scope_code]
            if not codes or not any(self._scope_rows.get(c) for c in codes):
                return []
            scores = query @ self._mat[:, :n]
            held = sum(self._scope_rows.get(c, 0) for c in codes)
            allowed = np.zeros(len(self._scope_code), dtype=bool)
            allowed[codes] = True
            # Where other scopes hold only a few rows, they are dropped from the best k + few (masking a
            # million scores costs a fifth of the product); otherwise masked first.
            masked = held < n and (n - held > _FEW_OTHERS or self._expiring > 0)
            if masked:
                scores[~allowed[self._scopes[:n]]] = -np.inf
            if self._expiring:
                scores[self._expires[:n] <= (time.time() if now is None else now)] = -np.inf
            want = min(k if masked or held == n else k + (n - held), n)
            top = largest(scores, want)
            top = top[np.argsort(-scores[top], kind="stable")]
            if not masked and held < n:
                top = top[allowed[self._scopes[top]]][:k]
            return [(int(self._rids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]
