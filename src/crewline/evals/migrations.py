"""Schema of evaluations (component ``evals``), append-only: evaluation runs and their cases
(:mod:`.results`), forced promotions (:mod:`.gate`). A released migration is never edited.
"""

from __future__ import annotations

from ..store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "eval runs, eval cases, promotion overrides",
        (
            """CREATE TABLE eval_runs (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                target TEXT NOT NULL,
                dataset TEXT NOT NULL,
                dataset_version TEXT NOT NULL,
                plan TEXT NOT NULL,
                status TEXT NOT NULL,
                passed INTEGER,
                summary TEXT,
                cost {real} NOT NULL DEFAULT 0,
                started_at {real} NOT NULL,
                finished_at {real}
            )""",
            "CREATE INDEX eval_runs_target ON eval_runs (target, dataset, started_at)",
            """CREATE TABLE eval_cases (
                run_id TEXT NOT NULL,
                case_id TEXT NOT NULL,
                repeat_no INTEGER NOT NULL,
                split TEXT NOT NULL,
                output TEXT,
                scores TEXT NOT NULL,
                error TEXT,
                cost {real} NOT NULL DEFAULT 0,
                latency_ms {real} NOT NULL DEFAULT 0,
                created_at {real} NOT NULL,
                PRIMARY KEY (run_id, case_id, repeat_no)
            )""",
            """CREATE TABLE eval_overrides (
                id {serial},
                prompt TEXT NOT NULL,
                label TEXT NOT NULL,
                version TEXT NOT NULL,
                who TEXT NOT NULL,
                reason TEXT NOT NULL,
                at {real} NOT NULL
            )""",
        ),
    ),
)
