"""The database: connect by URL, schema and migrations, dialect hooks, payload blobs, retention.

Each table has one owning module, the only one that issues its SQL; everything else calls the owner's
functions. A component's migrations (its ``migrations.py``) create its tables.

- ``runs``: :mod:`crewline.flows.run_store`; ``steps``: :mod:`crewline.flows.step_store`
- ``events`` (sent to runs): :mod:`crewline.flows.event_store`
- ``run_attempts`` (a rerun run's earlier attempts): :mod:`crewline.flows.attempts`
- ``reviews``: :mod:`crewline.flows.review_requests`
- ``prompt_versions``, ``prompt_labels``: :mod:`crewline.flows.prompts`
- ``switches``, ``flags``: :mod:`crewline.flows.switches`
- ``model_calls``, ``model_call_hours``: :mod:`crewline.models.call_log`
- ``model_call_rollups``, ``model_call_rollup_errors``, ``model_call_rollup_state``: :mod:`crewline.models.call_log`
- ``model_budgets``, ``model_reservations``: :mod:`crewline.models.ledger`
- ``model_cache``: :mod:`crewline.models.cache`
- ``model_rate_windows``: :mod:`crewline.models.limits`
- ``model_input_factors``: :mod:`crewline.models.calibration`
- ``memory_items``, ``memory_documents``, ``memory_versions``, ``memory_changes``: :mod:`crewline.memory.versions`
- ``memory_snapshots``: :mod:`crewline.memory.rollback`
- ``memory_messages``: :mod:`crewline.memory.window`
- ``memory_upkeep``: :mod:`crewline.memory.upkeep`
- ``memory_indexes``: :mod:`crewline.memory.store`
- ``memory_searches``: :mod:`crewline.memory.retrieval`
- ``memory_vectors`` (pgvector's HNSW side, where the database has the extension): :mod:`crewline.memory.ann`
- ``api_keys``: :mod:`crewline.server.keys`
- ``console_sessions``: :mod:`crewline.console.sessions`
- ``webhook_deliveries``: :mod:`crewline.server.deliveries`
- ``blobs``: :mod:`crewline.store.payloads`
- ``workers``: :mod:`crewline.workers.claim`
- ``schedules``: :mod:`crewline.workers.cron`
- ``inbox_state``, ``inbox_messages``, ``inbox_attachments``: :mod:`crewline.workers.inbox_state`
- ``schema_versions``: :mod:`crewline.store.migrate`
- ``secrets``: :mod:`crewline.secret_store`
- ``eval_runs``, ``eval_cases``: :mod:`crewline.evals.results`
- ``eval_overrides``: :mod:`crewline.evals.gate`
- ``alert_state``, ``alert_history``, ``alert_outbox``: :mod:`crewline.observe.alerts`
- ``slack_review_posts``: :mod:`crewline.workers.slack_outbox`
- ``scratch_text``, ``scratch_tokens`` (an in-memory tokenizer, in no crewline database): :mod:`crewline.store.fulltext`

Dialect differences (row locks, full text, DDL types, placeholders) are hooks of
:mod:`crewline.store.dialects`; code outside ``store/`` never checks which dialect it talks to.
"""

from __future__ import annotations

from .database import Conn, Database
from .migrate import check, upgrade

__all__ = ["Conn", "Database", "check", "open_database", "upgrade"]


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open the database at ``url``; with ``migrate`` bring its schema up to date first."""
    db = Database(url)
    if migrate:
        upgrade(db)
    return db
