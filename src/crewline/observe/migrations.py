"""Schema of the alerts (component ``alerts``), append-only; the tables' owner is :mod:`crewline.observe.alerts`.

``alert_state`` holds one row per rule: whether an episode is open, when the rule is next due, so the
workers that evaluate rules take turns instead of each notifying. ``alert_history`` keeps every episode
start and end (and budget crossing); ``dedupe`` makes a crossing announced once however many processes
see it. ``alert_outbox`` holds each notice per channel until it is delivered or its retry window passes.
"""

from __future__ import annotations

from ..store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "alert state, history and outbox",
        (
            """CREATE TABLE alert_state (
                rule TEXT PRIMARY KEY,
                firing INTEGER NOT NULL DEFAULT 0,
                since {real},
                value {real},
                last_fired_at {real},
                next_eval_at {real} NOT NULL,
                created_at {real} NOT NULL
            )""",
            """CREATE TABLE alert_history (
                id {serial},
                rule TEXT NOT NULL,
                state TEXT NOT NULL,
                at {real} NOT NULL,
                summary TEXT NOT NULL,
                value {real},
                threshold {real},
                link TEXT,
                dedupe TEXT UNIQUE
            )""",
            "CREATE INDEX alert_history_at ON alert_history (at)",
            """CREATE TABLE alert_outbox (
                id {serial},
                history_id INTEGER NOT NULL,
                channel TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at {real} NOT NULL,
                created_at {real} NOT NULL,
                last_error TEXT
            )""",
            "CREATE INDEX alert_outbox_due ON alert_outbox (state, next_at)",
        ),
    ),
)
