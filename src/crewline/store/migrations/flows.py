"""AI-step tables: review requests and decisions, prompt versions and labels."""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "review requests",
        (
            """CREATE TABLE reviews (
                id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL,
                step_no INTEGER NOT NULL,
                kind TEXT NOT NULL,
                action TEXT NOT NULL,
                risk TEXT NOT NULL,
                preview TEXT,
                preview_blob TEXT,
                preview_type TEXT,
                context TEXT,
                status TEXT NOT NULL,
                escalated INTEGER NOT NULL DEFAULT 0,
                on_timeout TEXT NOT NULL,
                expires_at {real},
                decided_by TEXT,
                decided_at {real},
                comment TEXT,
                shown_hash TEXT,
                edit TEXT,
                edit_blob TEXT,
                outcome TEXT,
                created_at {real} NOT NULL
            )""",
            "CREATE INDEX reviews_status ON reviews (status, created_at)",
            "CREATE INDEX reviews_run ON reviews (run_id)",
        ),
    ),
    Migration(
        2,
        "prompt versions and labels",
        (
            # version: the first 12 hex digits of the sha256 of the whole file (source).
            """CREATE TABLE prompt_versions (
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                body TEXT NOT NULL,
                metadata TEXT NOT NULL,
                source TEXT NOT NULL,
                created_at {real} NOT NULL,
                PRIMARY KEY (name, version)
            )""",
            """CREATE TABLE prompt_labels (
                name TEXT NOT NULL,
                label TEXT NOT NULL,
                version TEXT NOT NULL,
                updated_at {real} NOT NULL,
                PRIMARY KEY (name, label)
            )""",
        ),
    ),
)
