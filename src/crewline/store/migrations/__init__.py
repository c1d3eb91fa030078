"""Schema migrations: one append-only, ordered list per component.

Each room of the package owns the tables it needs and their history: ``engine`` (runs, steps, events,
blobs, workers, schedules), ``gateway`` (model calls, budgets, cache), ``memory``. A component's list only
ever grows; a migration, once released, is never edited. ``schema_versions`` records how far each
component has been taken; :func:`crewline.store.migrate.upgrade` applies what is missing, each migration in
its own transaction with its version bump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..database import Conn

__all__ = ["Migration", "Step", "components"]

Step = str | Callable[["Conn"], None]


@dataclass(frozen=True)
class Migration:
    """``steps`` are portable SQL (``{blob}``, ``{serial}``, ``{real}`` for DDL types) or callables."""

    version: int
    name: str
    steps: tuple[Step, ...]


def components() -> dict[str, tuple[Migration, ...]]:
    from . import alerts, engine, flows, gateway, memory, server

    return {
        "alerts": alerts.MIGRATIONS,
        "engine": engine.MIGRATIONS,
        "flows": flows.MIGRATIONS,
        "gateway": gateway.MIGRATIONS,
        "memory": memory.MIGRATIONS,
        "server": server.MIGRATIONS,
    }
