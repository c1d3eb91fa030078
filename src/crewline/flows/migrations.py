"""Schema of the orchestration plane: the ``engine`` and ``flows`` components' append-only migrations.

``engine``: runs, their steps and events (owned by :mod:`crewline.flows.run_store`), a rerun run's earlier
attempts (:mod:`crewline.flows.attempts`), payload blobs
(:mod:`crewline.store.payloads`), workers (:mod:`crewline.workers.claim`) and cron ticks
(:mod:`crewline.workers.cron`); they were created together, so their history stays one list.
``flows``: review requests (:mod:`crewline.flows.review_requests`), prompt versions and labels
(:mod:`crewline.flows.prompts`), workflow and queue switches and flags (:mod:`crewline.flows.switches`).
A released migration is never edited; new ones are appended.
``PAYLOAD_TABLES`` tells retention which of these rows carry a run's payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.migrations import Migration
from ..store.retention import PayloadTable

if TYPE_CHECKING:
    from ..store.database import Conn


def _cluster_steps(conn: Conn) -> None:
    # A lone run's step is a commit of one record; on SQLite its table and key index were two B-trees,
    # two pages to write and flush at every step (see Dialect.cluster_on_key).
    conn.dialect.cluster_on_key(conn.raw, "steps")


# What retention (`crewline prune`) empties or deletes once a run finished long enough ago.
PAYLOAD_TABLES: tuple[PayloadTable, ...] = (
    PayloadTable(
        "runs",
        ("input", "input_blob", "output", "output_blob"),
        "id",
        finished="status IN ('completed', 'failed', 'cancelled') AND finished_at < ?",
        pruned_at="pruned_at",
    ),
    PayloadTable("steps", ("input", "input_blob", "output", "output_blob", "error"), "run_id"),
    PayloadTable("events", ("payload", "payload_blob"), "run_id"),
    PayloadTable("run_attempts", ("error", "steps", "steps_blob"), "run_id"),
)

ENGINE: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, steps, events, blobs",
        (
            """CREATE TABLE blobs (
                hash TEXT PRIMARY KEY,
                data {blob} NOT NULL,
                size INTEGER NOT NULL,
                created_at {real} NOT NULL
            )""",
            """CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                workflow TEXT NOT NULL,
                version TEXT,
                queue TEXT NOT NULL DEFAULT 'default',
                priority INTEGER NOT NULL DEFAULT 0,
                status TEXT NOT NULL,
                input TEXT,
                input_blob TEXT,
                output TEXT,
                output_blob TEXT,
                error TEXT,
                idempotency_key TEXT UNIQUE,
                parent_id TEXT,
                parent_step INTEGER,
                forked_from TEXT,
                fork_step INTEGER,
                wait_reason TEXT,
                wait_event TEXT,
                wake_at {real},
                lease_owner TEXT,
                lease_until {real},
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                recoveries INTEGER NOT NULL DEFAULT 0,
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL,
                finished_at {real}
            )""",
            "CREATE INDEX runs_claim ON runs (status, wake_at)",
            "CREATE INDEX runs_lease ON runs (status, lease_until)",
            "CREATE INDEX runs_queue ON runs (queue, status)",
            "CREATE INDEX runs_created ON runs (created_at)",
            "CREATE INDEX runs_parent ON runs (parent_id)",
            """CREATE TABLE steps (
                run_id TEXT NOT NULL,
                step_no INTEGER NOT NULL,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                effect TEXT NOT NULL,
                status TEXT NOT NULL,
                output TEXT,
                output_blob TEXT,
                error TEXT,
                attempts INTEGER NOT NULL DEFAULT 1,
                started_at {real} NOT NULL,
                finished_at {real},
                PRIMARY KEY (run_id, step_no)
            )""",
            """CREATE TABLE events (
                id {serial},
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                payload TEXT,
                payload_blob TEXT,
                created_at {real} NOT NULL,
                consumed_step INTEGER
            )""",
            "CREATE INDEX events_run ON events (run_id, name, consumed_step)",
        ),
    ),
    Migration(
        2,
        "workers and cron ticks",
        (
            """CREATE TABLE workers (
                id TEXT PRIMARY KEY,
                hostname TEXT NOT NULL,
                pid INTEGER NOT NULL,
                concurrency INTEGER NOT NULL,
                started_at {real} NOT NULL,
                heartbeat_at {real} NOT NULL,
                stopped_at {real}
            )""",
            """CREATE TABLE schedules (
                workflow TEXT PRIMARY KEY,
                cron TEXT NOT NULL,
                last_tick {real} NOT NULL
            )""",
            "CREATE INDEX runs_finished ON runs (finished_at)",
        ),
    ),
    Migration(
        3,
        "step inputs for tools and model calls",
        (
            "ALTER TABLE steps ADD COLUMN input TEXT",
            "ALTER TABLE steps ADD COLUMN input_blob TEXT",
        ),
    ),
    Migration(
        4,
        "fork overrides (model, prompt versions)",
        ("ALTER TABLE runs ADD COLUMN overrides TEXT",),
    ),
    Migration(
        5,
        "the API key that started a run",
        (
            "ALTER TABLE runs ADD COLUMN started_by TEXT",
            "CREATE INDEX runs_started_by ON runs (started_by, created_at)",
        ),
    ),
    Migration(
        6,
        "when a run's payloads were pruned",
        ("ALTER TABLE runs ADD COLUMN pruned_at {real}",),
    ),
    Migration(
        7,
        "the W3C trace context of a run, so every process that executes it continues one trace",
        ("ALTER TABLE runs ADD COLUMN trace_parent TEXT",),
    ),
    Migration(
        8,
        "compensations: what a finished step registered, and a compensation asked for a run",
        (
            "ALTER TABLE steps ADD COLUMN compensation TEXT",
            "ALTER TABLE runs ADD COLUMN compensate TEXT",
        ),
    ),
    Migration(
        9,
        "reruns: a run's attempt number and its earlier attempts, kept when it is rerun from a step",
        (
            "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
            """CREATE TABLE run_attempts (
                run_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                from_step INTEGER NOT NULL,
                status TEXT NOT NULL,
                error TEXT,
                finished_at {real},
                rerun_at {real} NOT NULL,
                steps TEXT,
                steps_blob TEXT,
                PRIMARY KEY (run_id, attempt)
            )""",
        ),
    ),
    Migration(
        10,
        "pausing runs",
        (
            # pause_requested: an operator asked a running run to pause at its next step boundary.
            # pause_scope: who paused it ('run', 'workflow' or 'queue'), so resuming a workflow or queue
            # leaves the runs an operator paused one by one paused.
            "ALTER TABLE runs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN pause_scope TEXT",
        ),
    ),
    Migration(
        11,
        "runs by their last change, for the console's live updates",
        ("CREATE INDEX runs_updated ON runs (updated_at)",),
    ),
    Migration(
        12,
        "runs by state and by workflow, newest first, for the console's filtered pages",
        (
            # The claim index (status, wake_at) answers "runs in a state" only by sorting all of them;
            # these stop after one page, and (status, created_at) also covers runs-by-state since a time.
            "CREATE INDEX runs_status_created ON runs (status, created_at)",
            "CREATE INDEX runs_workflow_created ON runs (workflow, created_at)",
        ),
    ),
    Migration(
        13,
        "runs counted by state over a window, and finished since a time, from indexes alone",
        (
            # The overview counts today's runs by state and those completed since a time; through the
            # narrow (created_at) index each run was a random read of the payload-wide table.
            # (status, finished_at) replaces (finished_at), whose only readers also name the status.
            "CREATE INDEX runs_created_status ON runs (created_at, status)",
            "DROP INDEX runs_created",
            "CREATE INDEX runs_status_finished ON runs (status, finished_at)",
            "DROP INDEX runs_finished",
        ),
    ),
    Migration(
        14,
        "shadow runs: a run that performs no irreversible effect, and what its steps would have done",
        (
            # shadow: 1 for a shadow run; shadow_of: the live run it runs beside (None for an evaluation).
            "ALTER TABLE runs ADD COLUMN shadow INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN shadow_of TEXT",
            # shadowed: {name, arguments, idempotency_key} of the irreversible call a shadow step held back.
            "ALTER TABLE steps ADD COLUMN shadowed TEXT",
        ),
    ),
    Migration(
        15,
        "steps stored along their key, one B-tree written by a step's record instead of two",
        (_cluster_steps,),
    ),
)

FLOWS: tuple[Migration, ...] = (
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
    Migration(
        3,
        "workflow and queue switches; flags",
        (
            """CREATE TABLE switches (
                scope TEXT NOT NULL,
                name TEXT NOT NULL,
                paused INTEGER NOT NULL DEFAULT 0,
                disabled INTEGER NOT NULL DEFAULT 0,
                updated_at {real} NOT NULL,
                PRIMARY KEY (scope, name)
            )""",
            """CREATE TABLE flags (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at {real} NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "reviews by decision time (the console's audit trail)",
        ("CREATE INDEX reviews_decided ON reviews (decided_at)",),
    ),
)
