"""``crewline memory``: ingest documents, search, inspect history, roll back, forget scopes, purge expired items."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from ..app import App
from ..memory import MemoryStore
from ..memory.ingest import collect_files
from ._common import (
    app_option,
    echo_json,
    errors_as_exit,
    fail,
    load_app,
    read_json_arg,
    table,
    when,
    with_app,
)

__all__ = ["memory"]

T = TypeVar("T")
_by = click.option("--by", "author", default="operator", show_default=True, help="Recorded as the author.")


def _with_store(app_ref: str | None, fn: Callable[[MemoryStore], Coroutine[Any, Any, T]]) -> T:
    app = load_app(app_ref)

    async def go(app: App) -> T:
        section = app.settings.sections.get("memory") or {}
        if not isinstance(section, dict):
            fail("[memory] in crewline.toml must be a table")
        gateway = app.models if section.get("embedder", "local") != "local" else None
        return await fn(MemoryStore.from_settings(app.db, section, gateway=gateway))

    return with_app(go, app)


@click.group()
def memory() -> None:
    """The context store: scoped memory with hybrid search, versions and rollback."""


@memory.command("ingest")
@app_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--scope", required=True, help="Scope to ingest into, e.g. kb or customer:42.")
@click.option("--metadata", default=None, help="JSON object added to every chunk (or @file.json).")
@_by
def ingest_cmd(
    app_ref: str | None, paths: tuple[Path, ...], scope: str, metadata: str | None, author: str
) -> None:
    """Chunk, embed and index text, Markdown, HTML and PDF files (directories are walked)."""
    meta = read_json_arg(metadata, "--metadata")
    with errors_as_exit():
        files = collect_files(paths)

    async def go(store: MemoryStore) -> Any:
        bar: Any = click.progressbar(length=len(files), label="ingesting", file=sys.stderr)
        with bar:
            return await store.ingest(
                files, scope=scope, metadata=meta, author=author, progress=lambda _p, _o: bar.update(1)
            )

    report = _with_store(app_ref, go)
    click.echo(
        f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
        f"{len(report.failed)} failed; chunks: {report.chunks_added} added, {report.chunks_removed} removed, "
        f"{report.chunks_kept} kept"
    )
    for path, error in report.failed.items():
        click.echo(f"failed: {path}: {error}", err=True)
    if report.failed:
        raise SystemExit(1)


@memory.command("remember")
@app_option
@click.argument("text")
@click.option("--scope", required=True, help="Scope to remember it in, e.g. customer:42.")
@click.option("--ttl", default=None, help="Forget it after this long, e.g. 365d or 12h (default: never).")
@click.option("--meta", "metadata", default=None, help="JSON object of metadata (or @file.json).")
@click.option("--kind", default="fact", show_default=True, help="What it is: fact, note, preference, ...")
@_by
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def remember_cmd(
    app_ref: str | None,
    text: str,
    scope: str,
    ttl: str | None,
    metadata: str | None,
    kind: str,
    author: str,
    as_json: bool,
) -> None:
    """Store TEXT (- reads standard input) in a scope; a near duplicate there is updated instead."""
    if text == "-":
        text = sys.stdin.read()
    meta = read_json_arg(metadata, "--meta")
    written = _with_store(
        app_ref,
        lambda store: store.remember(text, scope=scope, kind=kind, metadata=meta, ttl=ttl, author=author),
    )
    if as_json:
        echo_json(dataclasses.asdict(written))
        return
    click.echo(f"{written.action} {written.id} in scope {written.scope} (version {written.version})")


@memory.command("search")
@app_option
@click.argument("query")
@click.option("--scope", "scopes", multiple=True, required=True, help="Scope to search (repeatable).")
@click.option("-k", "k", default=5, show_default=True, help="How many hits.")
@click.option("--filter", "flt", default=None, help='Metadata filter as JSON, e.g. \'{"lang": "en"}\'.')
@click.option("--vector-weight", default=1.0, show_default=True)
@click.option("--text-weight", default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def search_cmd(
    app_ref: str | None,
    query: str,
    scopes: tuple[str, ...],
    k: int,
    flt: str | None,
    vector_weight: float,
    text_weight: float,
    as_json: bool,
) -> None:
    """Hybrid search: vector and full text fused by reciprocal rank."""
    filter_ = read_json_arg(flt, "--filter")
    hits = _with_store(
        app_ref,
        lambda s: s.search(
            query,
            scope=list(scopes),
            k=k,
            filter=filter_,
            vector_weight=vector_weight,
            text_weight=text_weight,
        ),
    )
    if as_json:
        echo_json([{**h.to_record(), "text": h.text, "metadata": h.metadata} for h in hits])
        return
    rows = [
        (
            h.id,
            h.scope,
            f"{h.score:.4f}",
            _fmt(h.vector_score),
            _fmt(h.text_score),
            _where(h.source, h.heading),
            h.text.replace("\n", " ")[:60],
        )
        for h in hits
    ]
    click.echo(table(["id", "scope", "score", "vector", "text", "from", "text"], rows))


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _where(source: str | None, heading: str | None) -> str | None:
    if source is None:
        return heading
    name = Path(source).name or source
    return f"{name} > {heading}" if heading else name


@memory.command("show")
@app_option
@click.argument("item_id")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(app_ref: str | None, item_id: str, as_json: bool) -> None:
    """One item or chunk as it is now."""
    item = _with_store(app_ref, lambda s: s.get(item_id))
    if item is None:
        fail(f"no memory item {item_id!r}")
    if as_json:
        echo_json(item.__dict__)
        return
    click.echo(f"{item.id}  scope {item.scope}  kind {item.kind}  version {item.version}  by {item.author}")
    click.echo(f"updated {when(item.updated_at)}  expires {when(item.expires_at)}")
    if item.document_id:
        click.echo(f"document {item.document_id}  position {item.position}  heading {item.heading or '-'}")
    if item.metadata:
        click.echo(f"metadata {item.metadata}")
    click.echo("")
    click.echo(item.text)


@memory.command("history")
@app_option
@click.argument("target")
@click.option("--limit", default=50, show_default=True, help="For a scope: how many recent writes.")
@click.option("--json", "as_json", is_flag=True)
def history_cmd(app_ref: str | None, target: str, limit: int, as_json: bool) -> None:
    """Versions of an item or document (by id), or the recent writes of a scope (by scope name)."""

    async def go(store: MemoryStore) -> Any:
        versions = await store.history(target)
        return versions or await store.scope_history(target, limit=limit)

    versions = _with_store(app_ref, go)
    if as_json:
        echo_json([v.__dict__ for v in versions])
        return
    rows = [
        (
            v.seq,
            v.entity,
            v.entity_id,
            v.version,
            v.op,
            v.author,
            when(v.at),
            ((v.state or {}).get("text") or "")[:50].replace("\n", " ") or None,
        )
        for v in versions
    ]
    click.echo(table(["seq", "entity", "id", "version", "op", "by", "at", "text"], rows))


@memory.command("snapshot")
@app_option
@click.argument("scope")
@click.option("--label", default=None, help="A name to roll back to later.")
@_by
def snapshot_cmd(app_ref: str | None, scope: str, label: str | None, author: str) -> None:
    """Mark the scope's current state (nothing is copied)."""
    snap = _with_store(app_ref, lambda s: s.snapshot(scope, label=label, author=author))
    click.echo(
        f"{snap.id}  scope {snap.scope}  at {when(snap.created_at)}" + (f"  label {label}" if label else "")
    )


@memory.command("rollback")
@app_option
@click.argument("scope")
@click.option("--to", "to", required=True, help="A snapshot id or label, an ISO time, or a Unix time.")
@_by
def rollback_cmd(app_ref: str | None, scope: str, to: str, author: str) -> None:
    """Put the scope back as it was (the rollback is recorded and can be undone)."""
    target: str | float = to
    with contextlib.suppress(ValueError):
        target = float(to)
    report = _with_store(app_ref, lambda s: s.rollback(scope, to=target, author=author))
    click.echo(f"rolled back {scope}: {report.restored} restored, {report.removed} removed")


@memory.command("delete")
@app_option
@click.argument("entity_id")
@_by
def delete_cmd(app_ref: str | None, entity_id: str, author: str) -> None:
    """Delete one item, or one document with its chunks (recorded; a rollback can restore it)."""
    if not _with_store(app_ref, lambda s: s.delete(entity_id, author=author)):
        fail(f"no memory item or document {entity_id!r}")
    click.echo(f"deleted {entity_id}")


@memory.command("forget")
@app_option
@click.argument("scope")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_cmd(app_ref: str | None, scope: str, yes: bool) -> None:
    """Delete everything of a scope for good: items, documents, history, snapshots, blobs."""
    if not yes:
        click.confirm(f"Forget everything in scope {scope!r}? This cannot be undone", abort=True)
    counts = _with_store(app_ref, lambda s: s.forget(scope))
    click.echo("forgot " + ", ".join(f"{n} {what}" for what, n in counts.items()))


@memory.command("purge")
@app_option
def purge_cmd(app_ref: str | None) -> None:
    """Delete the items whose TTL has passed now (workers also do it every [memory] purge_every)."""
    purged = _with_store(app_ref, lambda s: s.purge_expired())
    click.echo(f"purged {purged} expired item{'' if purged == 1 else 's'}")


@memory.command("stats")
@app_option
@click.option("--json", "as_json", is_flag=True)
def stats_cmd(app_ref: str | None, as_json: bool) -> None:
    """Counts per scope, the embedder and its dimension."""
    stats = _with_store(app_ref, lambda s: s.stats())
    if as_json:
        echo_json(stats.__dict__)
        return
    click.echo(f"embedder {stats.embedder or '-'} (dim {stats.dim or '-'})")
    click.echo(
        f"{stats.items} items ({stats.chunks} chunks) in {len(stats.scopes)} scopes, {stats.documents} documents, "
        f"{stats.versions} versions, {stats.snapshots} snapshots"
    )
    if stats.scopes:
        click.echo(table(["scope", "items"], sorted(stats.scopes.items())))


@memory.command("reembed")
@app_option
def reembed_cmd(app_ref: str | None) -> None:
    """Re-embed every item with the configured embedder (after changing the model); resumable."""

    async def go(store: MemoryStore) -> int:
        total = await store.count_items()
        bar: Any = click.progressbar(length=total, label="re-embedding", file=sys.stderr)
        with bar:
            return await store.reembed(progress=bar.update)

    done = _with_store(app_ref, go)
    click.echo(f"re-embedded {done} items")
