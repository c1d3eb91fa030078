"""``ctx.memory``: the memory store as durable, recorded workflow steps.

Every search is a ``read`` step whose recorded result is the hits themselves (ids, chunk and document ids,
scores, sources, text), so a replay returns exactly what the first execution saw and a reviewer can see
which memories shaped an output; the hits are also added to the run's provenance. Writes are
``idempotent`` steps (a repeated write is deduplicated to "unchanged") authored by the run and step.
The conversation window (``ctx.memory.conversation(thread_id)``) works the same way: each append and
each read is a step, so a replay sees the window the first execution saw and never appends twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Protocol

from ..observe.events import RetrievalEvent
from .results import Hit
from .store import MemoryStore
from .window import ConversationWindow, Message, Summariser

__all__ = ["RunConversation", "RunMemory", "StepRunner", "hits_from_record"]


class StepRunner(Protocol):
    """What memory needs of a workflow context (``crewline.Context`` is one): durable steps, the run and
    step it is at, and the run's provenance, where searches note the memories they found."""

    run_id: str
    workflow: str
    provenance: list[dict[str, Any]]

    @property
    def step_count(self) -> int: ...

    async def step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        effect: Literal["read", "idempotent", "irreversible"] = "read",
        **kwargs: Any,
    ) -> Any: ...


class RunMemory:
    """Attached to a workflow context as ``ctx.memory``."""

    def __init__(self, ctx: StepRunner, store: MemoryStore, project: Path | None = None) -> None:
        self._ctx = ctx
        self.store = store
        self.project = project  # what ingest may read: paths in a run's input are not trusted

    def _author(self) -> str:
        return f"run:{self._ctx.run_id}/step:{self._ctx.step_count + 1}"

    async def search(
        self,
        query: str,
        *,
        scope: str | Iterable[str],
        k: int = 5,
        name: str = "memory.search",
        **options: Any,
    ) -> list[Hit]:
        """Hybrid search as a recorded step (options as for :meth:`MemoryStore.search`)."""
        scopes = [scope] if isinstance(scope, str) else list(scope)
        run = (self._ctx.run_id, self._ctx.step_count + 1)

        async def search() -> dict[str, Any]:
            started = time.time()
            hits = await self.store.search(query, scope=scopes, k=k, run=run, **options)
            if self.store.observers:
                self._report(scopes, k, hits, started)
            return {"query": query, "scopes": scopes, "k": k, "hits": [asdict(h) for h in hits]}

        record = await self._ctx.step(search, name=name, effect="read")
        hits = hits_from_record(record)
        self._ctx.provenance.append(
            {
                "kind": "memory",
                "step": self._ctx.step_count,
                "query": query[:200],
                "scopes": scopes,
                "hits": [h.to_record() for h in hits],
            }
        )
        return hits

    def _report(self, scopes: list[str], k: int, hits: list[Hit], started: float) -> None:
        event = RetrievalEvent(
            scopes=tuple(scopes),
            k=k,
            hits=len(hits),
            top_score=hits[0].score if hits else None,
            started_at=started,
            duration_s=time.time() - started,
            run_id=self._ctx.run_id,
            workflow=self._ctx.workflow,
            step=self._ctx.step_count,  # the search step itself, begun before this runs
        )
        self.store.observers.emit(event)

    async def remember(self, text: str, *, scope: str, name: str = "memory.remember", **options: Any) -> str:
        """Store a fact as a recorded step; returns the item id (an existing one when deduplicated)."""
        author = self._author()

        async def remember() -> dict[str, Any]:
            written = await self.store.remember(text, scope=scope, author=author, **options)
            return asdict(written)

        record = await self._ctx.step(remember, name=name, effect="idempotent")
        return str(record["id"])

    async def delete(self, item_id: str, *, name: str = "memory.delete") -> bool:
        author = self._author()

        async def delete() -> bool:
            return await self.store.delete(item_id, author=author)

        return bool(await self._ctx.step(delete, name=name, effect="idempotent"))

    async def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        scope: str,
        name: str = "memory.ingest",
        **options: Any,
    ) -> dict[str, Any]:
        author = self._author()
        items = [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]

        async def ingest() -> dict[str, Any]:
            report = await self.store.ingest(
                items, scope=scope, author=author, within=self.project, **options
            )
            return asdict(report)

        result: dict[str, Any] = await self._ctx.step(ingest, name=name, effect="idempotent")
        return result

    def conversation(
        self,
        thread_id: str,
        *,
        max_tokens: int = 2000,
        keep_recent: int = 4,
        summarise: Summariser | None = None,
    ) -> RunConversation:
        """The conversation window of ``thread_id`` (a scope, e.g. ``"thread:T42"``) as recorded steps:
        ``append`` and ``window`` replay what they returned the first time. The window is kept within
        ``max_tokens``; ``summarise`` (e.g. :func:`~crewline.memory.gateway_summariser`) folds the oldest
        turns into a summary, else they are dropped."""
        window = ConversationWindow(
            self.store.db, thread_id, max_tokens=max_tokens, keep_recent=keep_recent, summarise=summarise
        )
        return RunConversation(self._ctx, window)


class RunConversation:
    """A conversation window whose reads and appends are steps of the run (from ``ctx.memory.conversation``)."""

    def __init__(self, ctx: StepRunner, window: ConversationWindow) -> None:
        self._ctx = ctx
        self._window = window

    @property
    def thread_id(self) -> str:
        return self._window.scope

    async def append(
        self, role: str, text: str, *, name: str = "memory.conversation.append"
    ) -> list[Message]:
        """Append a turn as an ``idempotent`` step; returns the window after it (summary first)."""
        # The step's own identity keys the turn: a step retried after its insert committed adds nothing.
        key = f"{self._ctx.run_id}/{self._ctx.step_count + 1}"

        async def append() -> list[dict[str, Any]]:
            return [asdict(m) for m in await self._window.add(role, text, key=key)]

        return _messages(await self._ctx.step(append, name=name, effect="idempotent"))

    async def window(self, *, name: str = "memory.conversation.window") -> list[Message]:
        """The window as a ``read`` step: the summary of older turns (if any), then the recent turns."""

        async def window() -> list[dict[str, Any]]:
            return [asdict(m) for m in await self._window.messages()]

        return _messages(await self._ctx.step(window, name=name, effect="read"))


def _messages(record: list[dict[str, Any]]) -> list[Message]:
    return [Message(**m) for m in record]


def hits_from_record(record: dict[str, Any]) -> list[Hit]:
    return [Hit(**h) for h in record.get("hits", [])]
