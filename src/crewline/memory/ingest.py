"""Ingesting documents: parse, chunk, embed, and write each document in one transaction.

A document is known by its scope and source (the file's absolute path). Re-ingesting an unchanged file
does nothing; a changed one keeps the chunks whose text did not change (no re-embedding), adds the new
ones and removes the rest, all as versions of the document's chunks, so a rollback can bring back the
previous text. Parsing and embedding happen before the transaction; a failure anywhere leaves the
document exactly as it was.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..store.database import Conn
from ..store.payloads import put_blob
from . import versions as v
from .chunking import Chunk, chunk_document
from .documents import SUPPORTED, ParsedDocument, parse_file
from .results import IngestReport
from .vectors import to_blob
from .writing import ScopeChanged, Writable, new_id

__all__ = ["collect_files", "ingest_parsed", "ingest_paths"]

_IN_FLIGHT = 4


def collect_files(paths: str | Path | Iterable[str | Path], within: Path | None = None) -> list[Path]:
    """Files to ingest: given files as they are (checked later), directories walked for supported types.

    With ``within`` (a workflow's project directory), relative paths are read from there and every file
    must be inside it, symlinks resolved: a path that came in with a run's input (``../``, an absolute
    path) cannot make a workflow index files from elsewhere on the server.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise InvalidInput("no paths given to ingest")
    out: list[Path] = []
    for raw in items:
        path = Path(raw) if within is None else within / raw
        if path.is_dir():
            found = list(_walk(path))
        elif path.exists():
            found = [path]
        else:
            raise InvalidInput(f"{raw}: no such file or directory")
        if within is not None and not all(f.resolve().is_relative_to(within.resolve()) for f in found):
            raise InvalidInput(
                f"{raw}: a workflow ingests only files inside the project directory; "
                "ingest others with `crewline memory ingest`"
            )
        out.extend(found)
    return out


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if path.is_file() and path.suffix.lower() in SUPPORTED:
            yield path


async def ingest_paths(
    store: Writable,
    paths: str | Path | Iterable[str | Path],
    scope: str,
    metadata: dict[str, Any],
    author: str,
    progress: Callable[[Path, str], None] | None,
    *,
    within: Path | None = None,
) -> IngestReport:
    files = collect_files(paths, within)
    await store.ready()
    # A few documents in flight: one is parsed and embedded while the writes of the others wait for the
    # commit, and writes submitted together share one group commit (one fsync instead of one each).
    # Each document is still its own write, so a failure leaves every other one as it was.
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(path: Path) -> tuple[IngestReport, str]:
        own = IngestReport()
        async with gate:
            try:
                doc = await asyncio.to_thread(parse_file, path)
                doc.source = str(path.resolve())
                outcome = await ingest_parsed(store, doc, scope, metadata, author, own)
            except InvalidInput as e:
                own.failed[str(path)] = str(e)
                outcome = "failed"
        if progress is not None:
            progress(path, outcome)
        return own, outcome

    tasks = [asyncio.ensure_future(one(path)) for path in files]
    try:
        done = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # an unexpected error stops the rest; what was committed stays committed
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    report = IngestReport()
    for own, _ in done:  # in file order, whatever order the documents finished in
        _merge(report, own)
    return report


def _merge(into: IngestReport, part: IngestReport) -> None:
    into.added += part.added
    into.updated += part.updated
    into.unchanged += part.unchanged
    into.failed.update(part.failed)
    into.chunks_added += part.chunks_added
    into.chunks_removed += part.chunks_removed
    into.chunks_kept += part.chunks_kept


async def ingest_parsed(
    store: Writable,
    doc: ParsedDocument,
    scope: str,
    metadata: dict[str, Any],
    author: str,
    report: IngestReport,
) -> str:
    """Write one parsed document; returns ``added``, ``updated`` or ``unchanged``."""
    await store.ready()
    chunks = chunk_document(doc, size=store.chunk_size, overlap=store.chunk_overlap)
    if not chunks:
        raise InvalidInput(f"{doc.source}: no text to index")
    doc_hash = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    meta = {**metadata, "source": doc.source, "mime": doc.mime}
    for _ in range(5):
        current = await store.db.read(lambda c: _current(c, scope, doc.source))
        if current is not None and current[0]["content_hash"] == doc_hash and current[0]["metadata"] == meta:
            report.unchanged.append(current[0]["id"])
            return "unchanged"
        existing = current[1] if current else {}
        fresh = [c for c in chunks if v.content_hash(c.text, c.heading) not in existing]
        vecs = (
            await store.embed([v.embed_text({"text": c.text, "heading": c.heading}) for c in fresh])
            if fresh
            else None
        )
        blobs = {id(c): to_blob(vecs[i]) for i, c in enumerate(fresh)} if vecs is not None else {}
        try:
            outcome, added, removed, kept = await store.db.write(
                functools.partial(
                    _write,
                    job=_Job(store.embedder.name, doc, doc_hash, scope, meta, author, chunks, blobs, current),
                )
            )
        except ScopeChanged:
            continue
        report.chunks_added += added
        report.chunks_removed += removed
        report.chunks_kept += kept
        doc_id = current[0]["id"] if current else outcome
        (report.updated if current else report.added).append(doc_id)
        return "updated" if current else "added"
    raise InvalidInput(f"{doc.source}: the document kept changing while being ingested; try again")


_Current = tuple[dict[str, Any], dict[str, dict[str, Any]]]


def _current(conn: Conn, scope: str, source: str) -> _Current | None:
    row = v.document_id(conn, scope, source)
    if row is None:
        return None
    state = v.get_document_state(conn, row)
    assert state is not None
    by_hash: dict[str, dict[str, Any]] = {}
    for s in v.document_chunks(conn, row):
        by_hash.setdefault(s["content_hash"], s)
    return state, by_hash


@dataclass(frozen=True)
class _Job:
    """One document's write, everything computed before the transaction."""

    model: str
    doc: ParsedDocument
    doc_hash: str
    scope: str
    meta: dict[str, Any]
    author: str
    chunks: list[Chunk]
    blobs: dict[int, bytes]  # id(chunk) -> embedding, for chunks not already stored
    current: _Current | None


def _write(conn: Conn, job: _Job) -> tuple[str, int, int, int]:
    conn.lock_key(f"memory:{job.scope}")
    now = time.time()
    old_doc = job.current[0] if job.current else None
    live = v.document_version(conn, job.scope, job.doc.source)
    if (live is None) != (old_doc is None) or (old_doc and live != int(old_doc["version"])):
        raise ScopeChanged(job.doc.source)
    doc_id = _put_document(conn, job, old_doc, now)
    added, removed, kept = _put_chunks(conn, job, doc_id, now)
    return doc_id, added, removed, kept


def _put_document(conn: Conn, job: _Job, old: dict[str, Any] | None, now: float) -> str:
    doc_id = str(old["id"]) if old else new_id("doc")
    state = {
        "id": doc_id,
        "scope": job.scope,
        "source": job.doc.source,
        "mime": job.doc.mime,
        "title": job.doc.title,
        "content_hash": job.doc_hash,
        "text_blob": put_blob(conn, job.doc.text.encode("utf-8"), now),
        "size": len(job.doc.text.encode("utf-8")),
        "chunks": len(job.chunks),
        "metadata": job.meta,
        "version": (int(old["version"]) + 1) if old else 1,
        "author": job.author,
        "created_at": old["created_at"] if old else now,
        "updated_at": now,
    }
    v.put_document(conn, state, op="update" if old else "add", at=now)
    return doc_id


def _put_chunks(conn: Conn, job: _Job, doc_id: str, now: float) -> tuple[int, int, int]:
    """Keep unchanged chunks (moving them if needed), add new ones, delete the rest."""
    existing = dict(job.current[1]) if job.current else {}
    fresh: list[tuple[dict[str, Any], bytes]] = []
    kept = 0
    for c in job.chunks:
        h = v.content_hash(c.text, c.heading)
        old = existing.pop(h, None)
        place = {"position": c.position, "char_start": c.char_start, "char_end": c.char_end}
        if old is None:
            state = {
                "id": new_id("chk"),
                "scope": job.scope,
                "kind": "chunk",
                "document_id": doc_id,
                "heading": c.heading,
                "text": c.text,
                "content_hash": h,
                "metadata": job.meta,
                "expires_at": None,
                "version": 1,
                "author": job.author,
                "created_at": now,
                "updated_at": now,
                **place,
            }
            fresh.append((state, job.blobs[id(c)]))
            continue
        kept += 1
        if any(old[k] != place[k] for k in place) or old["metadata"] != job.meta:
            moved = {
                **old,
                **place,
                "metadata": job.meta,
                "version": old["version"] + 1,
                "author": job.author,
                "updated_at": now,
            }
            emb = v.embedding_of(conn, old["id"])
            v.put_item(conn, moved, embedding=emb, embed_model=job.model, op="update", at=now)
    v.add_items(conn, fresh, embed_model=job.model, at=now)
    for old in existing.values():
        v.delete_item(conn, old["id"], author=job.author, op="delete", at=now)
    return len(fresh), len(existing), kept
