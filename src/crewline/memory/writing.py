"""What the store's write paths share, below the store so that ingesting and rolling back (modules the
store calls) never import the store back: the :class:`Writable` view of the store they write through, the
conflict that sends a planned write back to planning, and the ids new rows get."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Protocol

from ..store.database import Database
from .embedders import Embedder, Matrix
from .vectors import VectorIndex

__all__ = ["ScopeChanged", "Writable", "new_id"]


class ScopeChanged(Exception):
    """The scope changed between planning a write and committing it; the caller plans again.

    A signal inside memory/ (remembering, rolling back; an ingest checks a whole batch's documents up front
    instead), always caught: never raised to a user, so not in the error tree."""


class Writable(Protocol):
    """What a write path needs of the memory store (:class:`crewline.memory.MemoryStore` is one)."""

    @property
    def db(self) -> Database: ...

    @property
    def embedder(self) -> Embedder: ...

    @property
    def chunk_size(self) -> int: ...

    @property
    def chunk_overlap(self) -> int: ...

    async def embed(self, texts: Sequence[str], *, field: str = "text") -> Matrix: ...

    async def ready(self) -> VectorIndex: ...


def new_id(prefix: str) -> str:
    """A new id: the time in milliseconds (12 hex digits) then 64 random bits (16), so that ids made
    later sort later. The indexes on ids (the items', the versions' by entity) then grow at their end
    instead of at random pages, which an ingest of many chunks rewrites far fewer of per commit."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"
