"""Schema of the model gateway (component ``gateway``), append-only: model calls (:mod:`.call_log`),
budgets and reservations (:mod:`.ledger`), the response cache (:mod:`.cache`), shared rate windows
(:mod:`.limits`), input-token factors learned from misses (:mod:`.calibration`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.migrations import Migration

if TYPE_CHECKING:
    from ..store import Conn


def _refill_rollups(conn: Conn) -> None:
    # Imported when run: the call log pulls in numpy, which a process that only lists migrations skips.
    from .call_log import refill_rollups

    refill_rollups(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "model calls, budgets, reservations, cache, rate windows",
        (
            """CREATE TABLE model_calls (
                id {serial},
                started_at {real} NOT NULL,
                day TEXT NOT NULL,
                run_id TEXT,
                step INTEGER,
                workflow TEXT,
                virtual_key TEXT,
                requested TEXT NOT NULL,
                kind TEXT NOT NULL,
                provider TEXT,
                model TEXT,
                deployment TEXT,
                status TEXT NOT NULL,
                error_class TEXT,
                error_message TEXT,
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                cache_read_tokens INTEGER NOT NULL DEFAULT 0,
                cache_write_tokens INTEGER NOT NULL DEFAULT 0,
                reasoning_tokens INTEGER NOT NULL DEFAULT 0,
                cost {real} NOT NULL DEFAULT 0,
                price_known INTEGER NOT NULL DEFAULT 1,
                latency_ms {real},
                ttft_ms {real},
                cache_hit INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 1,
                request TEXT,
                request_blob TEXT,
                response TEXT,
                response_blob TEXT
            )""",
            "CREATE INDEX model_calls_started ON model_calls (started_at)",
            "CREATE INDEX model_calls_run ON model_calls (run_id, step)",
            "CREATE INDEX model_calls_day ON model_calls (day, model)",
            """CREATE TABLE model_budgets (
                scope TEXT PRIMARY KEY,
                limit_nusd BIGINT,
                spent_nusd BIGINT NOT NULL DEFAULT 0,
                reserved_nusd BIGINT NOT NULL DEFAULT 0,
                alerted INTEGER NOT NULL DEFAULT 0,
                updated_at {real} NOT NULL
            )""",
            """CREATE TABLE model_reservations (
                id TEXT PRIMARY KEY,
                scopes TEXT NOT NULL,
                amount_nusd BIGINT NOT NULL,
                created_at {real} NOT NULL
            )""",
            """CREATE TABLE model_cache (
                key TEXT PRIMARY KEY,
                response TEXT NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                hits INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX model_cache_expires ON model_cache (expires_at)",
            """CREATE TABLE model_rate_windows (
                deployment TEXT NOT NULL,
                win BIGINT NOT NULL,
                requests INTEGER NOT NULL,
                tokens BIGINT NOT NULL,
                PRIMARY KEY (deployment, win)
            )""",
        ),
    ),
    Migration(
        2,
        "a covering index for reports over a time window",
        (
            # Reports read a window of calls by start time; through a narrow index each row is a random
            # read of the (payload-wide) table, about ten times slower than reading the index alone.
            "CREATE INDEX model_calls_report ON model_calls (started_at, provider, model, requested, workflow, "
            "virtual_key, run_id, status, error_class, cost, price_known, cache_hit, attempts, latency_ms, ttft_ms)",
            "DROP INDEX model_calls_started",
        ),
    ),
    Migration(
        3,
        "hourly rollups of model calls",
        (
            # One row per closed hour rolled up (its call count tells a late record apart), the figures
            # and errors per class per dimension value (dim '' for all calls, model, workflow, key), and
            # how far the call log has been checked for records written late into rolled-up hours.
            """CREATE TABLE model_call_hours (
                hour BIGINT PRIMARY KEY,
                calls BIGINT NOT NULL,
                rolled_at {real} NOT NULL
            )""",
            """CREATE TABLE model_call_rollups (
                hour BIGINT NOT NULL,
                dim TEXT NOT NULL,
                value TEXT NOT NULL,
                calls BIGINT NOT NULL,
                cost {real} NOT NULL,
                errors BIGINT NOT NULL,
                retried BIGINT NOT NULL,
                cache_hits BIGINT NOT NULL,
                unpriced BIGINT NOT NULL,
                run_cost {real} NOT NULL,
                latency {blob} NOT NULL,
                ttft {blob} NOT NULL,
                runs {blob} NOT NULL,
                PRIMARY KEY (hour, dim, value)
            )""",
            """CREATE TABLE model_call_rollup_errors (
                hour BIGINT NOT NULL,
                dim TEXT NOT NULL,
                value TEXT NOT NULL,
                error_class TEXT NOT NULL,
                calls BIGINT NOT NULL,
                PRIMARY KEY (hour, dim, value, error_class)
            )""",
            """CREATE TABLE model_call_rollup_state (
                id INTEGER PRIMARY KEY,
                checked_id BIGINT NOT NULL,
                seen_id BIGINT NOT NULL,
                seen_at {real} NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "what each model bills past the input-token ceiling",
        (
            """CREATE TABLE model_input_factors (
                model TEXT PRIMARY KEY,
                factor {real} NOT NULL,
                misses BIGINT NOT NULL,
                updated_at {real} NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "token sums and chart percentiles in the hourly rollups of model calls",
        (
            # The spend report (console costs, `crewline costs`, /api/v1/spend) reads closed hours from
            # the rollups, so they carry its token sums and a dimension of the model that answered;
            # each hour keeps its latency p50/p95 for the console's chart. ``tokens`` = 1: its rollups
            # have the sums; the hours rolled up before are rolled up again where their raw rows allow.
            *(
                f"ALTER TABLE model_call_rollups ADD COLUMN {name}_tokens BIGINT NOT NULL DEFAULT 0"
                for name in ("input", "output", "cache_read", "cache_write", "reasoning")
            ),
            "ALTER TABLE model_call_hours ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE model_call_hours ADD COLUMN latency_p50 {real}",
            "ALTER TABLE model_call_hours ADD COLUMN latency_p95 {real}",
            _refill_rollups,
        ),
    ),
)
