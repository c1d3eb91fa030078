"""Schema of the memory (component ``memory``), append-only: items, versions, documents, chunks and their
indexes.

``memory_items`` holds every searchable unit (facts, notes, document chunks) with its embedding;
``memory_versions`` is the append-only history of items and documents (the state after each write, as
JSON), which is what ``rollback`` replays; ``memory_changes`` is the feed the in-process vector index
follows; full text is the dialect's (:mod:`crewline.store.fulltext`: on SQLite FTS5, which triggers keep in
step with updates and deletes and the items' writer with its inserts; a generated ``tsvector`` on
PostgreSQL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.migrations import Migration
from .versions import ITEMS_TEXT

if TYPE_CHECKING:
    from ..store.database import Conn

_ITEMS = """CREATE TABLE memory_items (
    rid {serial},
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    document_id TEXT,
    position INTEGER,
    heading TEXT,
    char_start INTEGER,
    char_end INTEGER,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{{}}',
    embedding {blob},
    embed_model TEXT,
    expires_at {real},
    version INTEGER NOT NULL,
    author TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL
)"""


def _fulltext(conn: Conn) -> None:
    conn.dialect.fulltext.create(conn, ITEMS_TEXT)


def _fulltext_inserts(conn: Conn) -> None:
    conn.dialect.fulltext.drop_insert_trigger(conn, ITEMS_TEXT)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "items, versions, documents, snapshots, change feed, full text",
        (
            _ITEMS,
            "CREATE INDEX memory_items_scope ON memory_items (scope, kind)",
            "CREATE INDEX memory_items_hash ON memory_items (scope, content_hash)",
            "CREATE INDEX memory_items_document ON memory_items (document_id, position)",
            "CREATE INDEX memory_items_expiry ON memory_items (expires_at)",
            """CREATE TABLE memory_documents (
                id TEXT PRIMARY KEY,
                scope TEXT NOT NULL,
                source TEXT NOT NULL,
                mime TEXT NOT NULL,
                title TEXT,
                content_hash TEXT NOT NULL,
                text_blob TEXT,
                size INTEGER NOT NULL,
                chunks INTEGER NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{{}}',
                version INTEGER NOT NULL,
                author TEXT NOT NULL,
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL,
                UNIQUE (scope, source)
            )""",
            """CREATE TABLE memory_versions (
                id {serial},
                entity TEXT NOT NULL,
                entity_id TEXT NOT NULL,
                scope TEXT NOT NULL,
                version INTEGER NOT NULL,
                op TEXT NOT NULL,
                state TEXT,
                author TEXT NOT NULL,
                at {real} NOT NULL
            )""",
            "CREATE INDEX memory_versions_scope ON memory_versions (scope, id)",
            "CREATE INDEX memory_versions_entity ON memory_versions (entity_id, id)",
            "CREATE INDEX memory_versions_at ON memory_versions (scope, at)",
            """CREATE TABLE memory_snapshots (
                id TEXT PRIMARY KEY,
                scope TEXT NOT NULL,
                seq INTEGER NOT NULL,
                label TEXT,
                author TEXT NOT NULL,
                created_at {real} NOT NULL
            )""",
            "CREATE INDEX memory_snapshots_scope ON memory_snapshots (scope, created_at)",
            """CREATE TABLE memory_changes (
                seq {serial},
                rid INTEGER NOT NULL,
                at {real} NOT NULL
            )""",
            """CREATE TABLE memory_indexes (
                name TEXT PRIMARY KEY,
                embedder TEXT NOT NULL,
                dim INTEGER NOT NULL,
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL
            )""",
            """CREATE TABLE memory_messages (
                id {serial},
                scope TEXT NOT NULL,
                role TEXT NOT NULL,
                content TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                summary INTEGER NOT NULL DEFAULT 0,
                created_at {real} NOT NULL
            )""",
            "CREATE INDEX memory_messages_scope ON memory_messages (scope, id)",
            _fulltext,
        ),
    ),
    Migration(
        2,
        "search log",
        (
            """CREATE TABLE memory_searches (
                id {serial},
                at {real} NOT NULL,
                scopes TEXT NOT NULL,
                k INTEGER NOT NULL,
                hits INTEGER NOT NULL,
                top_score {real},
                run_id TEXT,
                step INTEGER
            )""",
            "CREATE INDEX memory_searches_at ON memory_searches (at)",
        ),
    ),
    Migration(
        3,
        "upkeep schedule, keyed conversation turns",
        (
            """CREATE TABLE memory_upkeep (
                task TEXT PRIMARY KEY,
                next_at {real} NOT NULL,
                last_at {real},
                last_count INTEGER
            )""",
            # A turn appended by a workflow step carries the step's key, so a step retried after its
            # insert committed appends nothing the second time.
            "ALTER TABLE memory_messages ADD COLUMN turn_key TEXT",
            "CREATE UNIQUE INDEX memory_messages_key ON memory_messages (scope, turn_key)",
        ),
    ),
    Migration(
        4,
        "partial indexes on content hash and expiry",
        (
            # Only remembering a fact looks items up by content hash, and only purging by expiry: a
            # document's chunks (most items, never expiring) no longer each add an entry at a random
            # page of these indexes.
            "DROP INDEX memory_items_hash",
            "CREATE INDEX memory_items_hash ON memory_items (scope, content_hash) WHERE kind <> 'chunk'",
            "DROP INDEX memory_items_expiry",
            "CREATE INDEX memory_items_expiry ON memory_items (expires_at) WHERE expires_at IS NOT NULL",
        ),
    ),
    Migration(
        5,
        "full text indexes inserted items itself",
        # The items' writer indexes a bulk insert in one statement (crewline.store.fulltext.Fts5).
        (_fulltext_inserts,),
    ),
)
