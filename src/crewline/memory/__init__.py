"""The context store: scoped, layered memory with hybrid retrieval, versions and rollback.

Long-term items (facts, notes) and document chunks live in one table per database, each with its scope,
metadata, optional TTL and embedding; every write is a version with its author. Retrieval fuses exact
vector search with full-text search (FTS5 / tsvector) by weighted reciprocal rank.
"""

from __future__ import annotations

from .embedders import Embedder, GatewayEmbedder, LocalEmbedder, embedder_from_config
from .records import Document, Hit, IngestReport, Item, Snapshot, Stats, Version
from .scopes import GLOBAL, validate_scope
from .store import OPERATOR, MemoryStore, RollbackReport, Written

__all__ = [
    "GLOBAL",
    "OPERATOR",
    "Document",
    "Embedder",
    "GatewayEmbedder",
    "Hit",
    "IngestReport",
    "Item",
    "LocalEmbedder",
    "MemoryStore",
    "RollbackReport",
    "Snapshot",
    "Stats",
    "Version",
    "Written",
    "embedder_from_config",
    "validate_scope",
]
