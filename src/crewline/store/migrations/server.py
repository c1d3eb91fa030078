"""Server tables: API keys, webhook deliveries."""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = ()
