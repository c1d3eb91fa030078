"""Schema of the server (component ``server``), append-only: API keys (:mod:`.keys`), webhook
deliveries (:mod:`.deliveries`).

``api_keys`` never holds a usable key: only its public id (the lookup prefix shown in listings) and the
SHA-256 of the whole token. ``webhook_deliveries`` remembers each accepted signature (hashed) until it is
older than the hook's tolerance window, which is what rejects replays; a delivery with a completion
callback also tracks that callback until it has been sent.
"""

from __future__ import annotations

from ..store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "api keys, webhook deliveries",
        (
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                scope TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                budget_per_day {real},
                rpm INTEGER,
                created_at {real} NOT NULL,
                expires_at {real},
                revoked_at {real},
                last_used_at {real}
            )""",
            """CREATE TABLE webhook_deliveries (
                signature_hash TEXT PRIMARY KEY,
                hook TEXT NOT NULL,
                run_id TEXT NOT NULL,
                received_at {real} NOT NULL,
                forget_after {real} NOT NULL,
                callback_url TEXT,
                callback_state TEXT,
                callback_attempts INTEGER NOT NULL DEFAULT 0,
                callback_next_at {real},
                callback_error TEXT
            )""",
            "CREATE INDEX webhook_deliveries_forget ON webhook_deliveries (forget_after)",
            "CREATE INDEX webhook_deliveries_callback ON webhook_deliveries (callback_state, callback_next_at)",
        ),
    ),
)
