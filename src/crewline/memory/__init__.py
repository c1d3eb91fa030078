"""The context store: scoped, layered memory with hybrid retrieval, versions and rollback.

Layers: a short-term conversation window per scope (:class:`ConversationWindow`), the run's own task
state (the engine's checkpoints), and long-term items (facts, notes) and document chunks in one table per
database, each with its scope, metadata, optional TTL and embedding; every write is a version with its
author. Retrieval fuses exact vector search with full-text search (FTS5 / tsvector) by weighted reciprocal
rank. In workflows, :class:`RunMemory` makes searches and writes recorded, durable steps.
"""

from __future__ import annotations

from .embedders import Embedder, GatewayEmbedder, LocalEmbedder, embedder_from_config, gateway_embedder
from .results import Document, Hit, IngestReport, Item, Snapshot, Stats, Version
from .scopes import GLOBAL, validate_scope
from .store import OPERATOR, MemoryStore, RollbackReport, Written
from .window import ConversationWindow, Message, gateway_summariser
from .workflow import RunMemory

__all__ = [
    "GLOBAL",
    "OPERATOR",
    "ConversationWindow",
    "Document",
    "Embedder",
    "GatewayEmbedder",
    "Hit",
    "IngestReport",
    "Item",
    "LocalEmbedder",
    "MemoryStore",
    "Message",
    "RollbackReport",
    "RunMemory",
    "Snapshot",
    "Stats",
    "Version",
    "Written",
    "embedder_from_config",
    "gateway_embedder",
    "gateway_summariser",
    "validate_scope",
]
