"""Memory tables: items, versions, documents, chunks and their indexes."""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = ()
