"""Gateway tables: model calls, prices, budget ledger, response cache."""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = ()
