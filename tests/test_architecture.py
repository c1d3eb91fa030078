"""The shape of the package, read from its source: who issues SQL on which table, and where the dialect
is looked at.

Every table has one owning module (see :mod:`crewline.store`'s docstring); only it, and the migrations
of its component, name the table in SQL (``FROM`` / ``INTO`` / ``UPDATE`` / ``JOIN``). Code outside
``store/`` never asks which dialect it talks to; it calls the dialect's hooks.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import crewline

ROOT = Path(crewline.__file__).parent

# table -> the module that alone issues its SQL (paths under src/crewline).
OWNERS = {
    "runs": "flows/records.py",
    "steps": "flows/records.py",
    "events": "flows/records.py",
    "reviews": "flows/review.py",
    "prompt_versions": "flows/prompts.py",
    "prompt_labels": "flows/prompts.py",
    "model_calls": "models/records.py",
    "model_budgets": "models/ledger.py",
    "model_reservations": "models/ledger.py",
    "model_cache": "models/cache.py",
    "model_rate_windows": "models/limits.py",
    "memory_items": "memory/versions.py",
    "memory_documents": "memory/versions.py",
    "memory_versions": "memory/versions.py",
    "memory_changes": "memory/versions.py",
    "memory_snapshots": "memory/rollback.py",
    "memory_messages": "memory/window.py",
    "memory_indexes": "memory/store.py",
    "api_keys": "server/keys.py",
    "webhook_deliveries": "server/deliveries.py",
    "blobs": "store/payloads.py",
    "workers": "workers/claim.py",
    "schedules": "workers/cron.py",
    "schema_versions": "store/migrate.py",
}

# SQL still issued outside its owner by modules another change is rewriting (the step journal moves
# Context.child's read into flows/records.py and the approval and model steps' reads into
# flows/review.py); remove an entry once that lands.
MOVING = {
    ("runs", "flows/context.py"),
    ("reviews", "flows/llm.py"),
    ("reviews", "flows/approvals.py"),
}
# The model gateway picks shared rate windows by dialect; the call-meter change is rewriting it.
DIALECT_MOVING = {"models/gateway.py"}

_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)")
_DIALECT_CHECK = re.compile(r"""dialect\.name\b|\.name\s*==\s*["'](?:sqlite|postgresql)["']""")


@cache
def sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.py"))}


def tables_named(text: str) -> set[str]:
    return {m.group(1) for m in _SQL_TABLE.finditer(text)}


def _created_tables() -> set[str]:
    pattern = re.compile(r"CREATE (?:VIRTUAL )?TABLE (?:IF NOT EXISTS )?(\w+)")
    return {m.group(1) for text in sources().values() for m in pattern.finditer(text)}


def test_every_table_has_an_owner() -> None:
    assert _created_tables() == set(OWNERS)


def test_only_the_owner_issues_a_tables_sql() -> None:
    strays = []
    for path, text in sources().items():
        for table in tables_named(text) & set(OWNERS):
            owner = OWNERS[table]
            beside = f"{owner.split('/')[0]}/migrations.py"
            if path not in (owner, beside) and (table, path) not in MOVING:
                strays.append(f"{path} issues SQL on {table} (owner: {owner})")
    assert strays == []


def test_the_owner_map_is_written_down_in_the_store() -> None:
    doc = crewline.store.__doc__ or ""
    for table, owner in OWNERS.items():
        module = "crewline." + owner.removesuffix(".py").replace("/", ".")
        assert re.search(rf"``{table}``[^\n]*{re.escape(module)}", doc), f"{table} -> {module} missing"


def test_no_dialect_checks_outside_the_store() -> None:
    found = [
        path
        for path, text in sources().items()
        if not path.startswith("store/") and path not in DIALECT_MOVING and _DIALECT_CHECK.search(text)
    ]
    assert found == []


def test_no_hand_written_row_locks_outside_the_store() -> None:
    lock = re.compile(r"FOR (?:NO KEY )?UPDATE|SKIP LOCKED")
    found = [path for path, text in sources().items() if not path.startswith("store/") and lock.search(text)]
    assert found == []
