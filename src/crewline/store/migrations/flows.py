"""AI-step tables: review requests and decisions, prompt versions and labels."""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = ()
