"""The memory store: long-term items and documents per scope, hybrid search, versions and rollback.

One :class:`MemoryStore` per database. Writes go through the store's group commit (``Database.write``)
and are versioned with their author; embeddings are computed before a write transaction opens, so a
transaction only ever touches the database and can be retried. Documents are ingested by
:mod:`crewline.memory.ingest`; the conversation window lives in :mod:`crewline.memory.window`. Tables: this module owns
``memory_indexes`` (which embedder the vectors come from); items, documents and versions are
:mod:`crewline.memory.versions`', snapshots :mod:`crewline.memory.rollback`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import parse_duration
from ..errors import ConfigError, InvalidInput
from ..observe.events import Observers
from ..store.database import Conn, Database
from ..store.payloads import load_json
from . import versions as v
from .ann import VectorSettings, enable_hnsw, vector_settings
from .embedders import Embedder, LocalEmbedder, Matrix, as_matrix
from .filters import validate_filter
from .fulltext import TextIndex
from .gateway import EmbeddingGateway
from .results import (
    Document,
    Hit,
    IngestReport,
    Item,
    RollbackReport,
    ScopeSummary,
    Snapshot,
    Stats,
    Version,
)
from .retrieval import Query, Reranker, SearchLog, log_search, run_query
from .rollback import count_snapshots, forget, list_snapshots, rollback, take_snapshot
from .scopes import validate_scope, validate_scopes
from .upkeep import purge_expired_in
from .vectors import ExactIndex, VectorIndex, to_blob
from .writing import ScopeChanged, new_id

__all__ = ["OPERATOR", "MemoryStore", "RollbackReport", "Written"]

OPERATOR = "operator"
_INDEX = "default"
_MAX_TEXT = 100_000


@dataclass(frozen=True)
class Written:
    """Outcome of a write: ``action`` is ``added``, ``updated`` (incl. a near duplicate) or ``unchanged``."""

    id: str
    scope: str
    action: str
    version: int
    duplicate_score: float | None = None


class MemoryStore:
    """Scoped long-term memory with hybrid retrieval over one :class:`Database`."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder | None = None,
        *,
        near_duplicate: float = 0.95,
        chunk_size: int = 1200,
        chunk_overlap: int = 150,
        text_budget: int | None = 4_000_000,
        vectors: VectorSettings | None = None,
    ) -> None:
        """``near_duplicate``: cosine at or above which a new fact updates an existing one (1.0: only
        exact duplicates); ``text_budget``: term postings kept in process for exact full-text ranking
        (``None``: none kept, the database ranks each query); ``vectors``: which vector index (pgvector's
        HNSW where the database has it, see :mod:`.ann`)."""
        self.db = db
        self.embedder: Embedder = embedder or LocalEmbedder()
        self.near_duplicate = near_duplicate
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.vectors = vectors or VectorSettings()
        self._index: VectorIndex | None = None
        self._text = TextIndex(text_budget)
        self._checked = False
        self.searches = 0
        self.searches_with_hits = 0
        # Told about searches made by workflow steps (``ctx.memory.search``); the app's hub.
        self.observers = Observers()

    @classmethod
    def from_settings(
        cls,
        db: Database,
        section: dict[str, Any],
        embedder: Embedder | None = None,
        *,
        gateway: EmbeddingGateway | None = None,
    ) -> MemoryStore:
        """A store configured by the ``[memory]`` table of ``crewline.toml`` (``gateway``: the model
        gateway, used when the configured embedder is a provider's model)."""
        from .embedders import embedder_from_config

        try:
            return cls(
                db,
                embedder or embedder_from_config(section, gateway=gateway),
                near_duplicate=float(section.get("near_duplicate", 0.95)),
                chunk_size=int(section.get("chunk_size", 1200)),
                chunk_overlap=int(section.get("chunk_overlap", 150)),
                text_budget=_text_budget(section.get("text_budget", 4_000_000)),
                vectors=vector_settings(section),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"[memory] settings are not valid: {e}") from e

    # -- the index record ------------------------------------------------------------------------------

    def _record_index(self, conn: Conn) -> None:
        """Record this embedder for the index on first use; refuse a different one afterwards.
        (Only touches the database: a group-commit write may run it twice.)"""
        row = conn.one("SELECT embedder, dim FROM memory_indexes WHERE name = ?", (_INDEX,))
        name, dim = self.embedder.name, self.embedder.dim
        if row is None:
            conn.execute(
                "INSERT INTO memory_indexes (name, embedder, dim, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (_INDEX, name, dim, time.time(), time.time()),
            )
        elif (row[0], int(row[1])) != (name, dim):
            raise ConfigError(
                f"the memory index was built with embedder {row[0]} (dim {row[1]}) but {name} (dim {dim}) "
                "is configured: run `crewline memory reembed` to re-embed everything with the new model"
            )

    async def ready(self) -> VectorIndex:
        """The vector index, once the configured embedder was checked against the one it was built with:
        pgvector's HNSW where the database has it (and ``vectors`` allows), else the exact index."""
        if self._checked and self._index is not None:
            return self._index
        dim = await asyncio.to_thread(lambda: self.embedder.dim)  # load the model outside the write lock

        def prepare(conn: Conn) -> VectorIndex | None:
            self._record_index(conn)
            return enable_hnsw(conn, dim, self.vectors)

        hnsw = await self.db.write(prepare)
        self._checked = True
        self._text.warm(self.db)
        if self._index is None:
            self._index = hnsw or ExactIndex(dim)
        return self._index

    async def embed(self, texts: Sequence[str], *, field: str = "text") -> Matrix:
        got = await self.embedder.embed(list(texts))
        return as_matrix(
            got, self.embedder.dim, field=f"embedder {self.embedder.name} output", rows=len(texts)
        )

    # -- long-term items -------------------------------------------------------------------------------

    async def remember(
        self,
        text: str,
        *,
        scope: str,
        kind: str = "fact",
        metadata: dict[str, Any] | None = None,
        ttl: str | float | None = None,
        author: str = OPERATOR,
        id: str | None = None,
        embedding: Sequence[float] | None = None,
        dedupe: bool = True,
    ) -> Written:
        """Store a fact or note. An exact or near duplicate in the scope is updated instead of added;
        with ``id`` the item of that id is replaced (a new version)."""
        text = _check_text(text, "text")
        validate_scope(scope)
        meta = _check_metadata(metadata)
        if not isinstance(kind, str) or not kind or kind == "chunk":
            raise InvalidInput(
                "kind must be a non-empty name such as 'fact' or 'note' ('chunk' is for documents)"
            )
        expires = _expiry(ttl)
        index = await self.ready()
        vec = (
            as_matrix(embedding, self.embedder.dim, field="embedding")
            if embedding is not None
            else await self.embed([text])
        )
        target, score = None, None
        if id is None and dedupe and self.near_duplicate < 1.0:
            target, score = await self.db.read(lambda c: self._near(c, index, vec[0], scope, kind))
        for _ in range(3):
            write = functools.partial(
                self._write_item,
                text=text,
                scope=scope,
                kind=kind,
                meta=meta,
                expires=expires,
                author=author,
                target=id or target,
                vec=vec,
                score=score,
            )
            try:
                return await self.db.write(write)
            except ScopeChanged:
                target, score = None, None
        raise InvalidInput(f"scope {scope!r} kept changing while remembering; try again")

    def _near(
        self, conn: Conn, index: VectorIndex, vec: Matrix, scope: str, kind: str
    ) -> tuple[str | None, float | None]:
        for rid, cos in index.synced(conn).search(vec, [scope], 5):
            if cos < self.near_duplicate:
                break
            found = v.item_kind(conn, rid)
            if found is not None and found[1] == kind:
                return found[0], cos
        return None, None

    def _write_item(
        self,
        conn: Conn,
        *,
        text: str,
        scope: str,
        kind: str,
        meta: dict[str, Any],
        expires: float | None,
        author: str,
        target: str | None,
        vec: Matrix,
        score: float | None,
    ) -> Written:
        conn.lock_key(f"memory:{scope}")
        now = time.time()
        chash = v.content_hash(text)
        exact = v.find_exact(conn, scope, chash, kind)
        if exact is not None and score is not None:
            target, text = str(exact), ""  # an exact duplicate keeps its own wording
        elif exact is not None and target is None:
            target, text = str(exact), ""
        current = v.get_item_state(conn, target) if target else None
        if target and current is None and score is not None:
            raise ScopeChanged(target)  # the near duplicate went away meanwhile
        if current is not None and current["scope"] != scope:
            raise InvalidInput(f"item {current['id']} belongs to scope {current['scope']!r}, not {scope!r}")
        if current is None:
            return self._add_item(
                conn, target or new_id("mem"), text, chash, scope, kind, meta, expires, author, vec
            )
        text = text or str(current["text"])
        merged = {**current["metadata"], **meta}
        new_expiry = expires if expires is not None else current["expires_at"]
        item_id, version = str(current["id"]), int(current["version"])
        if current["text"] == text and merged == current["metadata"] and new_expiry == current["expires_at"]:
            return Written(item_id, scope, "unchanged", version, score)
        state = {
            **current,
            "text": text,
            "content_hash": v.content_hash(text),
            "metadata": merged,
            "expires_at": new_expiry,
            "version": version + 1,
            "author": author,
            "updated_at": now,
        }
        emb = to_blob(vec[0]) if text != current["text"] else v.embedding_of(conn, item_id)
        v.put_item(conn, state, embedding=emb, embed_model=self.embedder.name, op="update", at=now)
        return Written(item_id, scope, "updated", version + 1, score)

    def _add_item(
        self,
        conn: Conn,
        item_id: str,
        text: str,
        chash: str,
        scope: str,
        kind: str,
        meta: dict[str, Any],
        expires: float | None,
        author: str,
        vec: Matrix,
    ) -> Written:
        now = time.time()
        state = {
            "id": item_id,
            "scope": scope,
            "kind": kind,
            "document_id": None,
            "position": None,
            "heading": None,
            "char_start": None,
            "char_end": None,
            "text": text,
            "content_hash": chash,
            "metadata": meta,
            "expires_at": expires,
            "version": 1,
            "author": author,
            "created_at": now,
            "updated_at": now,
        }
        v.put_item(conn, state, embedding=to_blob(vec[0]), embed_model=self.embedder.name, op="add", at=now)
        return Written(item_id, scope, "added", 1)

    async def count_items(self) -> int:
        return await self.db.read(v.count_items)

    async def get(self, item_id: str) -> Item | None:
        state = await self.db.read(lambda c: v.get_item_state(c, item_id))
        return None if state is None else _item(state)

    async def items(
        self, scope: str, *, kind: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Item]:
        validate_scope(scope)
        states = await self.db.read(lambda c: v.list_items(c, scope, kind, limit, offset))
        return [_item(s) for s in states]

    async def delete(self, item_id: str, *, author: str = OPERATOR) -> bool:
        """Delete an item, or a document with all its chunks (by the document's id); versioned, so a
        rollback can bring it back. False when there is no such id."""
        return await self.db.write(functools.partial(_delete, entity_id=item_id, author=author))

    async def purge_expired(self, *, now: float | None = None) -> int:
        """Maintenance: delete items whose TTL has passed (search already ignores them) and prune the
        vector index's change feed; returns how many items expired."""
        at = time.time() if now is None else now
        return await self.db.write(lambda conn: purge_expired_in(conn, at))

    # -- search ----------------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        scope: str | Iterable[str],
        k: int = 5,
        filter: dict[str, Any] | None = None,
        kinds: Iterable[str] | None = None,
        vector_weight: float = 1.0,
        text_weight: float = 1.0,
        candidates: int = 50,
        rerank: Reranker | None = None,
        rerank_pool: int | None = None,
        vector: Sequence[float] | None = None,
        min_score: float | None = None,
        run: tuple[str, int] | None = None,
    ) -> list[Hit]:
        """Hybrid search over ``scope`` (one or several); hits carry scores and provenance, best first.

        Each search is logged (``run``: the run id and step searching, when a workflow does)."""
        started = time.time()
        _check_search(query, k, vector_weight, text_weight, vector is not None)
        scopes = validate_scopes(scope)
        flt = validate_filter(filter) if filter is not None else None
        index = await self.ready()
        # A local embedder runs inside the read below: one thread hop per search instead of two.
        embed_sync: Any = getattr(self.embedder, "embed_sync", None)
        inline = vector is None and vector_weight > 0 and callable(embed_sync)
        qvec = None
        if vector is not None:
            qvec = as_matrix(vector, self.embedder.dim, field="vector")[0]
        elif vector_weight > 0 and not inline:
            qvec = (await self.embed([query], field="query"))[0]
        pool_k = max(k, rerank_pool or 3 * k) if rerank is not None else k
        q = Query(
            query,
            qvec,
            scopes,
            pool_k,
            flt,
            frozenset(kinds) if kinds is not None else None,
            float(vector_weight),
            float(text_weight),
            max(candidates, pool_k),
            min_score=min_score,
        )
        read = functools.partial(self._read_hits, index=index, q=q, embed_sync=embed_sync if inline else None)
        hits = await self.db.read(read)
        if rerank is not None and hits:
            out = rerank(query, hits)
            hits = list(await out) if inspect.isawaitable(out) else list(out)
        hits = hits[:k]
        await self._log_search(
            SearchLog(started, tuple(scopes), k, len(hits), hits[0].score if hits else None), run
        )
        return hits

    def _read_hits(self, conn: Conn, *, index: VectorIndex, q: Query, embed_sync: Any) -> list[Hit]:
        """Run ``q`` on a read connection; a local embedder (``embed_sync``) embeds its text here first."""
        if embed_sync is not None:
            vec = as_matrix(embed_sync([q.text]), self.embedder.dim, field=f"embedder {self.embedder.name}")
            q = dataclasses.replace(q, vector=vec[0])
        return run_query(conn, index.synced(conn), self._text, q)

    async def _log_search(self, entry: SearchLog, run: tuple[str, int] | None) -> None:
        """Count a search and log it (with the run and step that searched, if any)."""
        self.searches += 1
        self.searches_with_hits += bool(entry.hits)
        if run is not None:
            entry = dataclasses.replace(entry, run_id=run[0], step=run[1])
        await self.db.write(lambda conn: log_search(conn, entry))

    # -- versions --------------------------------------------------------------------------------------

    async def history(self, entity_id: str) -> list[Version]:
        rows = await self.db.read(lambda c: v.history(c, entity_id))
        return [
            Version(
                int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], load_json(r[6]) if r[6] else None, r[7], r[8]
            )
            for r in rows
        ]

    async def scope_history(self, scope: str, *, limit: int = 50) -> list[Version]:
        validate_scope(scope)
        rows = await self.db.read(lambda c: v.scope_history(c, scope, limit))
        return [Version(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], None, r[7], r[8]) for r in rows]

    async def snapshot(self, scope: str, *, label: str | None = None, author: str = OPERATOR) -> Snapshot:
        """A named point in the scope's history to roll back to (costs one row; nothing is copied)."""
        validate_scope(scope)

        return await self.db.write(lambda c: take_snapshot(c, new_id("snap"), scope, label, author))

    async def scopes(self) -> list[ScopeSummary]:
        """Every scope that holds items or documents or has a history, by name, with its counts."""
        rows = await self.db.read(v.scope_counts)
        return [ScopeSummary(*row) for row in rows]

    async def snapshots(self, scope: str) -> list[Snapshot]:
        return await self.db.read(lambda c: list_snapshots(c, scope))

    async def rollback(
        self, scope: str, *, to: str | float | datetime, author: str = OPERATOR
    ) -> RollbackReport:
        """Put every item and document of ``scope`` back as it was at a snapshot (its id or label) or a
        time; the rollback is itself a set of new versions, so it can be undone the same way."""

        validate_scope(scope)
        return await rollback(self, scope, to, author)

    async def forget(self, scope: str) -> dict[str, int]:
        """Delete everything of ``scope``: items, documents, history, snapshots, messages, blobs, index."""

        validate_scope(scope)
        return await self.db.write(lambda c: forget(c, scope, time.time()))

    # -- documents -------------------------------------------------------------------------------------

    async def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        scope: str,
        metadata: dict[str, Any] | None = None,
        author: str = OPERATOR,
        progress: Any = None,
        within: Path | None = None,
    ) -> IngestReport:
        """Chunk, embed and index text, Markdown, HTML and PDF files (directories are walked); each file
        is written all or nothing (many to a transaction), so a failure leaves nothing half-indexed and a
        rerun picks up from there.
        ``within``: only files inside this directory (see :func:`~.ingest.collect_files`)."""
        from .ingest import ingest_paths

        validate_scope(scope)
        metadata = _check_metadata(metadata)
        return await ingest_paths(self, paths, scope, metadata, author, progress, within=within)

    async def ingest_text(
        self,
        text: str,
        *,
        source: str,
        scope: str,
        mime: str = "text/plain",
        metadata: dict[str, Any] | None = None,
        author: str = OPERATOR,
    ) -> IngestReport:
        from .documents import parse_text
        from .ingest import ingest_parsed

        validate_scope(scope)
        _check_text(text, "text", limit=50 * 1024 * 1024)
        report = IngestReport()
        await ingest_parsed(
            self, parse_text(source, text, mime), scope, _check_metadata(metadata), author, report
        )
        return report

    async def documents(self, scope: str) -> list[Document]:
        states = await self.db.read(lambda c: v.list_documents(c, scope))
        return [_document(s) for s in states]

    # -- maintenance -----------------------------------------------------------------------------------

    async def stats(self) -> Stats:
        def read(conn: Conn) -> Stats:
            idx = conn.one("SELECT embedder, dim FROM memory_indexes WHERE name = ?", (_INDEX,))
            totals = v.counts(conn)
            return Stats(
                items=totals["items"],
                chunks=totals["chunks"],
                documents=totals["documents"],
                versions=totals["versions"],
                snapshots=count_snapshots(conn),
                scopes=totals["scopes"],
                embedder=idx[0] if idx else None,
                dim=int(idx[1]) if idx else None,
                searches=self.searches,
                searches_with_hits=self.searches_with_hits,
            )

        return await self.db.read(read)

    async def reembed(self, *, batch: int = 256, progress: Any = None) -> int:
        """Re-embed every item with the configured embedder (resumable); returns how many were redone."""
        name = self.embedder.name
        done = 0
        while True:
            rows: list[tuple[Any, ...]] = await self.db.read(lambda c: v.unembedded(c, name, batch))
            if not rows:
                break
            vecs = await self.embed([v.embed_text({"text": r[1], "heading": r[2]}) for r in rows])
            await self.db.write(functools.partial(_store_vectors, rows=rows, vecs=vecs, name=name))
            done += len(rows)
            if progress is not None:
                progress(len(rows))

        def record(conn: Conn) -> None:
            now = time.time()
            conn.execute("DELETE FROM memory_indexes WHERE name = ?", (_INDEX,))
            conn.execute(
                "INSERT INTO memory_indexes (name, embedder, dim, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (_INDEX, name, self.embedder.dim, now, now),
            )

        await self.db.write(record)
        self._checked = True
        self._index = None
        return done


def _delete(conn: Conn, *, entity_id: str, author: str) -> bool:
    now = time.time()
    if v.delete_item(conn, entity_id, author=author, op="delete", at=now):
        return True
    if not v.delete_document(conn, entity_id, author=author, op="delete", at=now):
        return False
    for chunk_id in v.chunk_ids(conn, entity_id):
        v.delete_item(conn, chunk_id, author=author, op="delete", at=now)
    return True


def _store_vectors(conn: Conn, *, rows: list[tuple[Any, ...]], vecs: Matrix, name: str) -> None:
    now = time.time()
    for (rid, _, _), vec in zip(rows, vecs, strict=True):
        v.set_embedding(conn, int(rid), to_blob(vec), name, now)


def _text_budget(value: object) -> int | None:
    if value in (None, 0, "exact"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"[memory] text_budget must be a positive number of postings to keep or 'exact', got {value!r}"
        )
    return value


def _check_search(
    query: object, k: object, vector_weight: object, text_weight: object, has_vector: bool
) -> None:
    if not isinstance(query, str) or (not query.strip() and not has_vector):
        raise InvalidInput("query must be a non-empty string")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise InvalidInput(f"k must be an integer between 1 and 1000, got {k!r}")
    for name, w in (("vector_weight", vector_weight), ("text_weight", text_weight)):
        if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
            raise InvalidInput(f"{name} must be a number >= 0, got {w!r}")


def _check_text(text: object, field: str, *, limit: int = _MAX_TEXT) -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{field} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{field} is empty")
    if len(text) > limit:
        raise InvalidInput(
            f"{field} is {len(text)} characters, over the {limit} limit: ingest it as a document"
        )
    if "\x00" in text:
        raise InvalidInput(f"{field} contains NUL characters (binary data?)")
    return text.strip()


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInput("metadata must be a mapping with string keys")
    try:
        from ..store.payloads import dump

        dump(metadata)
    except Exception as e:
        raise InvalidInput(f"metadata must be JSON-serialisable: {e}") from None
    return dict(metadata)


def _expiry(ttl: str | float | None) -> float | None:
    if ttl is None:
        return None
    try:
        seconds = parse_duration(ttl)
    except ConfigError as e:
        raise InvalidInput(f"ttl: {e}") from None
    if seconds <= 0:
        raise InvalidInput(f"ttl must be positive, got {ttl!r}")
    return time.time() + seconds


def _item(state: dict[str, Any]) -> Item:
    return Item(
        id=state["id"],
        scope=state["scope"],
        kind=state["kind"],
        text=state["text"],
        metadata=state["metadata"],
        version=int(state["version"]),
        author=state["author"],
        created_at=state["created_at"],
        updated_at=state["updated_at"],
        expires_at=state["expires_at"],
        document_id=state["document_id"],
        position=state["position"],
        heading=state["heading"],
        char_start=state["char_start"],
        char_end=state["char_end"],
    )


def _document(state: dict[str, Any]) -> Document:
    meta = state["metadata"]
    return Document(
        id=state["id"],
        scope=state["scope"],
        source=state["source"],
        mime=state["mime"],
        title=state["title"],
        content_hash=state["content_hash"],
        size=int(state["size"]),
        chunks=int(state["chunks"]),
        metadata=load_json(meta) if isinstance(meta, str) else meta,
        version=int(state["version"]),
        author=state["author"],
        created_at=state["created_at"],
        updated_at=state["updated_at"],
    )
