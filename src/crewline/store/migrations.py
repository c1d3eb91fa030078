"""Schema migrations: one append-only, ordered list per component, kept beside the component.

Each room of the package owns the tables it needs and their history, in its own ``migrations.py``:
``alerts`` in :mod:`crewline.observe.migrations`, ``engine`` and ``flows`` in :mod:`crewline.flows.migrations`, ``evals`` in
:mod:`crewline.evals.migrations`, ``gateway`` in
:mod:`crewline.models.migrations`, ``inbox`` in :mod:`crewline.workers.migrations`, ``memory`` in :mod:`crewline.memory.migrations`, ``server`` in
:mod:`crewline.server.migrations`, ``console`` in :mod:`crewline.console.migrations`, ``secrets`` in :mod:`crewline.secret_store` (a module, so its one table's
migrations sit in it). A component's list only ever grows; a migration, once released, is
never edited. ``schema_versions`` records how far each component has been taken;
:func:`crewline.store.migrate.upgrade` applies what is missing, each migration in its own transaction
with its version bump.

The lists are found through :data:`COMPONENTS`, module paths that :func:`components` imports only when
called. ``store/`` thereby imports nothing above it when it is loaded (the component modules import
:class:`Migration` from here, so a module-level import back would be a cycle), and, unlike a registry the
upper layers fill as they are imported, every component is known even to a process that never imported
it (``crewline db upgrade`` must create the memory tables without loading the memory store first).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .database import Conn

__all__ = ["COMPONENTS", "Migration", "Step", "components"]

Step = str | Callable[["Conn"], None]


@dataclass(frozen=True)
class Migration:
    """``steps`` are portable SQL (``{blob}``, ``{serial}``, ``{real}`` for DDL types) or callables."""

    version: int
    name: str
    steps: tuple[Step, ...]


# component -> "module:attribute" of its list; the order is the order migrations are applied in.
COMPONENTS: dict[str, str] = {
    "alerts": "crewline.observe.migrations:MIGRATIONS",
    "console": "crewline.console.migrations:MIGRATIONS",
    "engine": "crewline.flows.migrations:ENGINE",
    "evals": "crewline.evals.migrations:MIGRATIONS",
    "flows": "crewline.flows.migrations:FLOWS",
    "gateway": "crewline.models.migrations:MIGRATIONS",
    "inbox": "crewline.workers.migrations:INBOX",
    "memory": "crewline.memory.migrations:MIGRATIONS",
    "server": "crewline.server.migrations:MIGRATIONS",
    "secrets": "crewline.secret_store:MIGRATIONS",
    "slack_reviews": "crewline.workers.slack_outbox:MIGRATIONS",
}


def components() -> dict[str, tuple[Migration, ...]]:
    out: dict[str, tuple[Migration, ...]] = {}
    for component, where in COMPONENTS.items():
        module, _, attribute = where.partition(":")
        out[component] = getattr(importlib.import_module(module), attribute)
    return out
