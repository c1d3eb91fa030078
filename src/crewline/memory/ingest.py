"""Ingesting documents: parse, chunk, embed, and write each document all or nothing.

A document is known by its scope and source (the file's absolute path). Re-ingesting an unchanged file
does nothing; a changed one keeps the chunks whose text did not change (no re-embedding), adds the new
ones and removes the rest, all as versions of the document's chunks, so a rollback can bring back the
previous text. Parsing and embedding happen before the transaction; a failure anywhere leaves the
document exactly as it was.

Documents go in batches: one read of what is stored, one embedding call and one transaction per batch
(the full-text index and the commit cost per batch, not per document), while the next batch is parsed
and embedded. A document whose stored version moved since it was planned is found before it writes
anything, so the rest of its batch still commits and it is planned again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..store.database import Conn
from ..store.payloads import put_blobs
from . import versions as v
from .chunking import Chunk, chunk_document
from .documents import SUPPORTED, ParsedDocument, parse_file
from .results import IngestReport
from .vectors import to_blobs
from .writing import Writable, new_id

__all__ = ["collect_files", "ingest_parsed", "ingest_paths"]

# A batch of documents shares one read, one embedding call and one transaction. Bigger batches cost
# less per chunk (fewer commits, fewer full-text index flushes) than the overlap of smaller ones gains.
_BATCH_BYTES = 2 * 1024 * 1024
_BATCH_DOCS = 256


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
    batch = _Batch(store, scope, metadata, author)
    docs: list[_Doc] = []
    # A pipeline three batches deep: while one batch of documents commits (SQLite and PostgreSQL do
    # that work outside the interpreter), the next is embedded and the one after it read and chunked,
    # each stage filling the others' waits for the tokenizer, numpy and the database.
    writing: tuple[list[_Doc], asyncio.Task[list[_Doc]]] | None = None
    parsing: asyncio.Future[list[_Doc]] | None = None
    try:
        groups = _groups(files)
        parsing = _parse_next(groups, store)
        while parsing is not None:
            parsed = await parsing
            parsing = _parse_next(groups, store)
            docs += parsed
            planned = await batch.plan(parsed)
            if writing is not None:
                await writing[1]
                _finish(writing[0], progress)
            writing = parsed, asyncio.ensure_future(batch.write(planned))
        if writing is not None:
            await writing[1]
            _finish(writing[0], progress)
    except BaseException:
        # An unexpected error stops the rest; what was committed stays committed.
        pending = [f for f in (parsing, writing[1] if writing else None) if f is not None]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    report = IngestReport()
    for doc in docs:  # in file order, whatever order the documents finished in
        _merge(report, doc.report)
    return report


def _groups(files: list[Path]) -> Iterator[list[Path]]:
    """Files in batches of about ``_BATCH_BYTES`` (and at most ``_BATCH_DOCS`` files), in order."""
    group: list[Path] = []
    size = 0
    for path in files:
        with contextlib.suppress(OSError):  # an unreadable file is reported by the parser
            size += path.stat().st_size
        group.append(path)
        if size >= _BATCH_BYTES or len(group) >= _BATCH_DOCS:
            yield group
            group, size = [], 0
    if group:
        yield group


def _parse_next(groups: Iterator[list[Path]], store: Writable) -> asyncio.Future[list[_Doc]] | None:
    """The next group of files parsed and chunked in a thread; ``None`` when there is none."""
    group = next(groups, None)
    if group is None:
        return None
    return asyncio.ensure_future(asyncio.to_thread(_parse_all, group, store.chunk_size, store.chunk_overlap))


def _parse_all(paths: list[Path], size: int, overlap: int) -> list[_Doc]:
    out = []
    for path in paths:
        doc = _Doc(path)
        try:
            parsed = parse_file(path)
            parsed.source = str(path.resolve())
            doc.chunk(parsed, size, overlap)
        except InvalidInput as e:
            doc.fail(e)
        out.append(doc)
    return out


def _finish(docs: list[_Doc], progress: Callable[[Path, str], None] | None) -> None:
    """Report the written documents' outcomes and let go of their text and chunks: only their reports
    are kept to the end. (Held to the end, a large ingest's chunks were also the bulk of what the
    cyclic garbage collector kept re-scanning, more often as they grew.)"""
    for doc in docs:
        if progress is not None and doc.path is not None:
            progress(doc.path, doc.outcome)
        doc.parsed, doc.chunks, doc.hashes = None, [], []


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
    one = _Doc(None)
    one.chunk(doc, store.chunk_size, store.chunk_overlap)
    batch = _Batch(store, scope, metadata, author)
    await batch.write(await batch.plan([one]))
    if one.error is not None:
        raise one.error
    _merge(report, one.report)
    return one.outcome


class _Doc:
    """One document on its way in: chunked and hashed, then planned against what is stored, then
    written; ``outcome`` is ``added``, ``updated``, ``unchanged`` or ``failed`` once it is settled."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.parsed: ParsedDocument | None = None
        self.chunks: list[Chunk] = []
        self.hashes: list[str] = []
        self.doc_hash = ""
        self.report = IngestReport()
        self.outcome = ""
        self.error: InvalidInput | None = None
        self.tries = 0

    def chunk(self, parsed: ParsedDocument, size: int, overlap: int) -> None:
        chunks = chunk_document(parsed, size=size, overlap=overlap)
        if not chunks:
            raise InvalidInput(f"{parsed.source}: no text to index")
        # Its sections are in the chunks now: not held (tracked objects the collector would rescan).
        self.parsed, self.chunks = dataclasses.replace(parsed, sections=[]), chunks
        self.hashes = [v.content_hash(c.text, c.heading) for c in chunks]
        self.doc_hash = hashlib.sha256(parsed.text.encode("utf-8")).hexdigest()  # its text blob's too

    def fail(self, error: InvalidInput) -> None:
        self.error, self.outcome = error, "failed"
        name = self.path if self.path is not None else self.parsed.source if self.parsed else ""
        self.report.failed[str(name)] = str(error)


class _Batch:
    """Plans and writes batches of documents into one scope: one read, one embedding call and one
    transaction per batch, each document still all-or-nothing within it."""

    def __init__(self, store: Writable, scope: str, metadata: dict[str, Any], author: str) -> None:
        self.store, self.scope, self.metadata, self.author = store, scope, metadata, author

    async def plan(self, docs: list[_Doc]) -> list[_Job]:
        """What each document's write will do, the new chunks embedded; unchanged ones are settled."""
        live = [d for d in docs if not d.outcome]
        sources = [str(d.parsed.source) for d in live if d.parsed is not None]
        currents = await self.store.db.read(lambda c: [_current(c, self.scope, s) for s in sources])
        planned: list[tuple[_Doc, dict[str, Any], _Current | None, list[int]]] = []
        texts: list[str] = []
        for doc, current in zip(live, currents, strict=True):
            assert doc.parsed is not None
            meta = {**self.metadata, "source": doc.parsed.source, "mime": doc.parsed.mime}
            if current is not None and (current[0]["content_hash"], current[0]["metadata"]) == (
                doc.doc_hash,
                meta,
            ):
                doc.report.unchanged.append(current[0]["id"])
                doc.outcome = "unchanged"
                continue
            fresh = _fresh(doc.hashes, current[1] if current else {})
            texts += [
                v.embed_text({"text": doc.chunks[i].text, "heading": doc.chunks[i].heading}) for i in fresh
            ]
            planned.append((doc, meta, current, fresh))
        vecs = iter(to_blobs(await self.store.embed(texts)) if texts else ())
        # The new chunks' rows and versions are built here, beside the write of the batch before, so
        # that the writer only inserts them; their created_at is when their document was read.
        now = time.time()
        model = self.store.embedder.name
        jobs: list[_Job] = []
        for doc, meta, current, fresh in planned:
            doc_id = str(current[0]["id"]) if current else new_id("doc")
            states = ((self._chunk_state(doc, i, doc_id, meta, now), next(vecs)) for i in fresh)
            jobs.append(
                _Job(model, doc, doc_id, meta, self.author, current, v.new_items(states, embed_model=model))
            )
        return jobs

    def _chunk_state(
        self, doc: _Doc, i: int, doc_id: str, meta: dict[str, Any], now: float
    ) -> dict[str, Any]:
        c = doc.chunks[i]
        return {
            "id": new_id("chk"),
            "scope": self.scope,
            "kind": "chunk",
            "document_id": doc_id,
            "position": c.position,
            "heading": c.heading,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "text": c.text,
            "content_hash": doc.hashes[i],
            "metadata": meta,
            "expires_at": None,
            "version": 1,
            "author": self.author,
            "created_at": now,
            "updated_at": now,
        }

    async def write(self, jobs: list[_Job]) -> list[_Doc]:
        """Commit ``jobs`` in one transaction; a document whose stored version moved since it was
        planned is planned again (a few times) and written in a later transaction."""
        settled: list[_Doc] = []
        while jobs:
            results = await self.store.db.write(functools.partial(_write_all, scope=self.scope, jobs=jobs))
            again: list[_Doc] = []
            for job, result in zip(jobs, results, strict=True):
                if result is not None:
                    job.settle(*result)
                    settled.append(job.doc)
                elif job.doc.tries < 5:
                    job.doc.tries += 1
                    again.append(job.doc)
                else:
                    source = job.doc.parsed.source if job.doc.parsed else str(job.doc.path)
                    job.doc.fail(
                        InvalidInput(f"{source}: the document kept changing while being ingested; try again")
                    )
                    settled.append(job.doc)
            jobs = await self.plan(again) if again else []
            settled += [d for d in again if d.outcome]
        return settled


# The stored document and its chunks by content hash (a text repeated in a document has several).
_Current = tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]


def _fresh(hashes: list[str], existing: dict[str, list[dict[str, Any]]]) -> list[int]:
    """Positions of the chunks a write adds (and must embed): each stored chunk is kept for one chunk
    with its hash, in order, as :func:`_keep_chunks` does."""
    left = {h: len(chunks) for h, chunks in existing.items()}
    out = []
    for i, h in enumerate(hashes):
        if left.get(h, 0) > 0:
            left[h] -= 1
        else:
            out.append(i)
    return out


def _current(conn: Conn, scope: str, source: str) -> _Current | None:
    row = v.document_id(conn, scope, source)
    if row is None:
        return None
    state = v.get_document_state(conn, row)
    assert state is not None
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for s in v.document_chunks(conn, row):
        by_hash.setdefault(s["content_hash"], []).append(s)
    return state, by_hash


@dataclass(frozen=True)
class _Job:
    """One document's write, everything computed before the transaction."""

    model: str
    doc: _Doc
    doc_id: str
    meta: dict[str, Any]
    author: str
    current: _Current | None
    fresh: v.NewItems  # the chunks not already stored, embedded

    @property
    def source(self) -> str:
        assert self.doc.parsed is not None
        return self.doc.parsed.source

    @property
    def text(self) -> bytes:
        assert self.doc.parsed is not None
        return self.doc.parsed.text.encode("utf-8")

    def settle(self, doc_id: str, added: int, removed: int, kept: int) -> None:
        report = self.doc.report
        report.chunks_added += added
        report.chunks_removed += removed
        report.chunks_kept += kept
        (report.updated if self.current else report.added).append(doc_id)
        self.doc.outcome = "updated" if self.current else "added"


_Written = tuple[str, int, int, int]


def _write_all(conn: Conn, *, scope: str, jobs: list[_Job]) -> list[_Written | None]:
    """Each job's (document id, chunks added, removed, kept), or ``None`` for one whose document
    changed since it was planned: that is found before it writes anything, so the others still go in.

    The documents, their text blobs and their new chunks go in together, a few statements for the
    whole batch: the full-text index is flushed once per statement (a statement of a thousand chunks
    costs less per chunk than one document's few dozen), and each statement the writer thread starts
    waits for the interpreter, which the next batch's parsing and embedding hold most of the time."""
    conn.lock_key(f"memory:{scope}")
    now = time.time()
    stored = v.document_versions(conn, scope, [job.source for job in jobs])
    out: list[_Written | None] = []
    written: list[_Job] = []
    for job in jobs:
        old = job.current[0] if job.current else None
        live = stored.get(job.source)
        if (live is None) != (old is None) or (old is not None and live != int(old["version"])):
            out.append(None)
            continue
        stored[job.source] = -1  # a second job for the same source in this batch is planned again
        removed, kept = _keep_chunks(conn, job, now)
        out.append((job.doc_id, len(job.fresh.items), removed, kept))
        written.append(job)
    texts = [job.text for job in written]
    blobs = put_blobs(conn, texts, now, [job.doc.doc_hash for job in written])
    states = [
        (_document_state(job, scope, blob, len(text), now), "update" if job.current else "add")
        for job, blob, text in zip(written, blobs, texts, strict=True)
    ]
    v.put_documents(conn, states, at=now)
    v.add_items(conn, [job.fresh for job in written], at=now)
    return out


def _document_state(job: _Job, scope: str, blob: str, size: int, now: float) -> dict[str, Any]:
    doc = job.doc.parsed
    assert doc is not None
    old = job.current[0] if job.current else None
    return {
        "id": job.doc_id,
        "scope": scope,
        "source": doc.source,
        "mime": doc.mime,
        "title": doc.title,
        "content_hash": job.doc.doc_hash,
        "text_blob": blob,
        "size": size,
        "chunks": len(job.doc.chunks),
        "metadata": job.meta,
        "version": (int(old["version"]) + 1) if old else 1,
        "author": job.author,
        "created_at": old["created_at"] if old else now,
        "updated_at": now,
    }


def _keep_chunks(conn: Conn, job: _Job, now: float) -> tuple[int, int]:
    """Keep the stored chunks the document still has (moving them if needed) and delete the rest;
    returns (removed, kept). The new ones were planned with the job (see :func:`_fresh`)."""
    existing = {h: list(chunks) for h, chunks in job.current[1].items()} if job.current else {}
    kept = 0
    for c, h in zip(job.doc.chunks, job.doc.hashes, strict=True):
        old = existing[h].pop(0) if existing.get(h) else None
        if old is None:
            continue
        kept += 1
        place = {"position": c.position, "char_start": c.char_start, "char_end": c.char_end}
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
    gone = [old for chunks in existing.values() for old in chunks]
    for old in gone:
        v.delete_item(conn, old["id"], author=job.author, op="delete", at=now)
    return len(gone), kept
