"""Schema of the console (component ``console``), append-only: its sign-in sessions (:mod:`.sessions`).

A session row never holds the session token itself, only its SHA-256: someone who reads the table cannot
sign in with what they read. Nor does it hold the API key the operator signed in with, only its id.
"""

from __future__ import annotations

from ..store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "console sessions",
        (
            """CREATE TABLE console_sessions (
                token_hash TEXT PRIMARY KEY,
                key_id TEXT NOT NULL,
                scope TEXT NOT NULL,
                csrf TEXT NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                last_seen_at {real} NOT NULL
            )""",
            "CREATE INDEX console_sessions_key ON console_sessions (key_id)",
            "CREATE INDEX console_sessions_expires ON console_sessions (expires_at)",
        ),
    ),
)
