"""What the memory store hands back: items, hits, documents, versions, snapshots, reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Document",
    "Hit",
    "IngestReport",
    "Item",
    "RollbackReport",
    "ScopeSummary",
    "Snapshot",
    "Stats",
    "Version",
]


@dataclass(frozen=True)
class Item:
    """A fact, note or document chunk as it is now."""

    id: str
    scope: str
    kind: str
    text: str
    metadata: dict[str, Any]
    version: int
    author: str
    created_at: float
    updated_at: float
    expires_at: float | None = None
    document_id: str | None = None
    position: int | None = None
    heading: str | None = None
    char_start: int | None = None
    char_end: int | None = None


@dataclass(frozen=True)
class Hit:
    """One search result with its scores and where it came from.

    ``score`` is the fused reciprocal-rank score (or the reranker's); ``vector_score`` the cosine
    similarity and ``text_score`` the full-text relevance, each ``None`` when that side did not find it.
    """

    id: str
    scope: str
    kind: str
    text: str
    score: float
    vector_score: float | None
    text_score: float | None
    vector_rank: int | None
    text_rank: int | None
    metadata: dict[str, Any]
    version: int
    document_id: str | None = None
    source: str | None = None
    position: int | None = None
    heading: str | None = None
    char_start: int | None = None
    char_end: int | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary for step records and review screens (no full text)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("text", "metadata") and v is not None}
        out["preview"] = self.text[:200]
        return out


@dataclass(frozen=True)
class Document:
    id: str
    scope: str
    source: str
    mime: str
    title: str | None
    content_hash: str
    size: int
    chunks: int
    metadata: dict[str, Any]
    version: int
    author: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Version:
    """One write in an item's or document's history; ``state`` is ``None`` after a delete."""

    seq: int
    entity: str
    entity_id: str
    scope: str
    version: int
    op: str
    state: dict[str, Any] | None
    author: str
    at: float


@dataclass(frozen=True)
class ScopeSummary:
    """A scope as listed: its live items (chunks included) and documents, and when it was last written."""

    scope: str
    items: int
    documents: int
    last_write: float | None


@dataclass(frozen=True)
class Snapshot:
    id: str
    scope: str
    seq: int
    label: str | None
    author: str
    created_at: float


@dataclass
class IngestReport:
    """What one ``ingest`` call did, per outcome."""

    added: list[str] = field(default_factory=list)  # document ids added
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> error message
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Stats:
    items: int
    chunks: int
    documents: int
    versions: int
    snapshots: int
    scopes: dict[str, int]
    embedder: str | None
    dim: int | None
    searches: int
    searches_with_hits: int


@dataclass(frozen=True)
class RollbackReport:
    scope: str
    to_seq: int
    restored: int
    removed: int
