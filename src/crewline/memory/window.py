"""The short-term layer: a conversation window per scope, kept within a token budget.

Turns are stored in ``memory_messages``, whose SQL this module alone issues. When the window grows past ``max_tokens``, the oldest turns (and
any earlier summary) are folded into one summary by the ``summarise`` hook, which a workflow wires to the
model gateway so the call is costed and budgeted like any other; without a hook the oldest turns are
dropped. The newest ``keep_recent`` turns are never folded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..store.database import Conn, Database
from .gateway import CompletionGateway
from .scopes import validate_scope

__all__ = ["ConversationWindow", "Message", "approx_tokens", "gateway_summariser"]

_ROLES = frozenset({"system", "user", "assistant", "tool", "summary"})


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    content: str
    tokens: int
    created_at: float
    summary: bool = False


def approx_tokens(text: str) -> int:
    """About four characters a token for English; pass ``count_tokens`` for an exact tokenizer."""
    return len(text) // 4 + 1


Summariser = Callable[[Sequence[Message]], Awaitable[str]]

_SUMMARY_PROMPT = (
    "Summarise this conversation so far for the assistant's own memory: keep names, facts, decisions, "
    "open questions and commitments; drop pleasantries. At most {words} words."
)


def gateway_summariser(
    gateway: CompletionGateway, model: str | None = None, *, words: int = 150, **options: Any
) -> Summariser:
    """A summarise hook calling ``gateway.complete`` (the model gateway: routed, priced and budgeted);
    ``options`` (e.g. ``budget_scope``, ``run_id``) are passed through."""

    async def summarise(messages: Sequence[Message]) -> str:
        transcript = "\n".join(f"{m.role}: {m.content}" for m in messages)
        reply = await gateway.complete(
            model,
            [
                {"role": "system", "content": _SUMMARY_PROMPT.format(words=words)},
                {"role": "user", "content": transcript},
            ],
            max_tokens=words * 2,
            **options,
        )
        return str(reply.text).strip()

    return summarise


class ConversationWindow:
    def __init__(
        self,
        db: Database,
        scope: str,
        *,
        max_tokens: int = 2000,
        keep_recent: int = 4,
        summarise: Summariser | None = None,
        count_tokens: Callable[[str], int] = approx_tokens,
    ) -> None:
        if max_tokens <= 0:
            raise InvalidInput(f"max_tokens must be positive, got {max_tokens}")
        self.db = db
        self.scope = validate_scope(scope)
        self.max_tokens = max_tokens
        self.keep_recent = max(1, keep_recent)
        self.summarise = summarise
        self.count_tokens = count_tokens

    async def add(self, role: str, content: str, *, key: str | None = None) -> list[Message]:
        """Append a turn, fold or drop the oldest ones if over budget; returns the window.

        A turn given a ``key`` is appended once: adding it again with the same key adds nothing."""
        if role not in _ROLES - {"summary"}:
            raise InvalidInput(f"role must be one of system, user, assistant, tool; got {role!r}")
        if not isinstance(content, str) or not content:
            raise InvalidInput("content must be a non-empty string")
        tokens = self.count_tokens(content)
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO memory_messages (scope, role, content, tokens, summary, created_at, turn_key) "
                "VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (scope, turn_key) DO NOTHING",
                (self.scope, role, content, tokens, time.time(), key),
            )
        )
        return await self._compact()

    async def messages(self) -> list[Message]:
        """The summary of older turns (if any) first, then the recent turns, oldest first."""
        rows = await self.db.read(
            lambda c: c.all(
                "SELECT id, role, content, tokens, created_at, summary FROM memory_messages WHERE scope = ? "
                "ORDER BY summary DESC, id",
                (self.scope,),
            )
        )
        return [Message(int(r[0]), r[1], r[2], int(r[3]), r[4], bool(r[5])) for r in rows]

    async def tokens(self) -> int:
        return sum(m.tokens for m in await self.messages())

    async def clear(self) -> None:
        await self.db.write(lambda c: forget_messages(c, self.scope))

    async def _compact(self) -> list[Message]:
        window = await self.messages()
        total = sum(m.tokens for m in window)
        if total <= self.max_tokens:
            return window
        turns = [m for m in window if not m.summary]
        foldable = turns[: max(0, len(turns) - self.keep_recent)]
        # Fold until what is left fits in half the budget, so compaction does not run on every turn.
        fold: list[Message] = []
        remaining = total
        for m in foldable:
            if remaining <= self.max_tokens // 2:
                break
            fold.append(m)
            remaining -= m.tokens
        if not fold:
            return window
        previous = [m for m in window if m.summary]
        summary = await self.summarise([*previous, *fold]) if self.summarise is not None else None
        last = fold[-1].id
        await self.db.write(lambda c: self._replace(c, last, summary, [m.id for m in previous]))
        return await self.messages()

    def _replace(self, conn: Conn, last: int, summary: str | None, previous: list[int]) -> None:
        conn.execute(
            "DELETE FROM memory_messages WHERE scope = ? AND summary = 0 AND id <= ?", (self.scope, last)
        )
        if summary is None:
            return
        for mid in previous:
            conn.execute("DELETE FROM memory_messages WHERE id = ?", (mid,))
        conn.execute(
            "INSERT INTO memory_messages (scope, role, content, tokens, summary, created_at) "
            "VALUES (?, 'summary', ?, ?, 1, ?)",
            (self.scope, summary, self.count_tokens(summary), time.time()),
        )


def forget_messages(conn: Conn, scope: str) -> int:
    """Delete the window of ``scope``; returns how many messages went."""
    return int(conn.execute("DELETE FROM memory_messages WHERE scope = ?", (scope,)).rowcount)
