"""Keeping a ``ctx.llm`` request inside the model's context window, and saying what was cut.

The room is the window (from the price table) times :data:`~crewline.models.tokens.WINDOW_MARGIN`, less
the reply's ``max_tokens``; sizes are estimated by :func:`~crewline.models.tokens.estimate_text_tokens`.
Memory hits go first, lowest score first, before any text is cut. Then the overflow policy: ``truncate``
keeps the head and tail of the longest message (then of the next longest, while still over), ``summarize``
does the same and puts a summary of each cut middle in its place (made by the cheapest tier, a recorded
step of its own, given to :func:`fit` as ``summarize``), ``fail`` refuses with the size and the limit. The
:class:`Cut` says what went (tokens, characters, which messages, which memories, the policy) and is
recorded in the step's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..errors import ContextTooLong
from ..models.config import Overflow
from ..models.tokens import WINDOW_MARGIN, estimate_messages_tokens, estimate_text_tokens
from ..models.types import Message, Tool, system

__all__ = ["SUMMARY_TOKENS", "Cut", "FitRequest", "MemoryHit", "fit", "memory_message", "room", "with_memory"]

KEEP_MIN = 200  # characters of a cut message always kept (its head and tail), so it still says what it is
SUMMARY_TOKENS = 512  # the reply budget of one summary
_SUMMARY_ROOM = SUMMARY_TOKENS + 16  # the room kept for a summary besides its marker
_MARKER_TOKENS = 32  # what "[N characters cut]" (or "summarised: ") weighs by the estimate, and more


class MemoryHit(Protocol):
    """A memory search hit as ``ctx.llm(memory=...)`` takes it (``crewline.memory.Hit`` is one)."""

    id: str
    text: str
    score: float


@dataclass(frozen=True)
class FitRequest:
    """A conversation to fit: its messages, the memory hits to show with it, and the window's terms."""

    messages: tuple[Message, ...]
    memory: tuple[MemoryHit, ...]
    tools: tuple[Tool, ...]
    window: int
    max_tokens: int
    policy: Overflow
    model: str


@dataclass
class Cut:
    """What fitting removed; ``record()`` is what the step's checkpoint keeps."""

    policy: Overflow
    window: int
    limit: int
    tokens_before: int
    tokens_after: int = 0
    memory_dropped: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "window": self.window,
            "limit": self.limit,
            "estimated_tokens_before": self.tokens_before,
            "estimated_tokens_after": self.tokens_after,
            "tokens_cut": self.tokens_before - self.tokens_after,
            "chars_cut": sum(m["chars_cut"] for m in self.messages),
            "memory_dropped": self.memory_dropped,
            "messages": self.messages,
        }


Summarize = Callable[[str], Awaitable[str]]


def room(window: int, max_tokens: int) -> int:
    """The estimated input tokens a request may have in ``window`` with ``max_tokens`` kept for the reply."""
    return math.floor(window * WINDOW_MARGIN) - max_tokens


def memory_message(hits: Sequence[MemoryHit]) -> Message:
    """The hits as one system message, best first."""
    lines = [f"[{i}] {h.text}" for i, h in enumerate(hits, start=1)]
    return system("Relevant memory, best first:\n" + "\n".join(lines))


async def fit(req: FitRequest, summarize: Summarize) -> tuple[tuple[Message, ...], Cut | None]:
    """The messages to send (memory included) and what was cut, or ``None`` when nothing was."""
    limit = room(req.window, req.max_tokens)
    hits = sorted(req.memory, key=lambda h: h.score, reverse=True)
    size = _size(req, with_memory(req.messages, hits))
    if size <= limit:
        return with_memory(req.messages, hits), None
    if limit <= 0:
        raise ContextTooLong(
            f"max_tokens {req.max_tokens} leaves no room for input in {req.model}'s context window of "
            f"{req.window} tokens: ask for fewer max_tokens"
        )
    cut = Cut(req.policy, req.window, limit, size)
    while hits and size > limit:
        dropped = hits.pop()
        cut.memory_dropped.append({"id": dropped.id, "score": dropped.score, "chars": len(dropped.text)})
        size = _size(req, with_memory(req.messages, hits))
    messages = with_memory(req.messages, hits)
    if size > limit:
        messages = await _cut_text(req, messages, cut, summarize)
    cut.tokens_after = _size(req, messages)
    return messages, cut


async def _cut_text(
    req: FitRequest, messages: tuple[Message, ...], cut: Cut, summarize: Summarize
) -> tuple[Message, ...]:
    if req.policy == "fail":
        raise ContextTooLong(_too_long(req, cut.tokens_before, cut.limit))
    reserve = _SUMMARY_ROOM if req.policy == "summarize" else 0
    out = list(messages)
    for i in _longest_first(out):
        over = _size(req, tuple(out)) + reserve - cut.limit
        if over <= 0:
            break
        text = out[i].text
        head, tail, tokens = _keep(text, over)
        middle = text[len(head) : len(text) - len(tail)]
        note = await _replacement(req.policy, middle, summarize)
        out[i] = replace(out[i], content=f"{head}{note}{tail}")
        cut.messages.append(_cut_entry(i, out[i].role, len(text), len(middle), tokens))
    if _size(req, tuple(out)) > cut.limit:
        raise ContextTooLong(_too_long(req, cut.tokens_before, cut.limit) + " even after cutting its text")
    return tuple(out)


async def _replacement(policy: Overflow, middle: str, summarize: Summarize) -> str:
    if policy == "summarize":
        summary = await summarize(middle)
        return f"\n[{len(middle)} characters summarised: {summary}]\n"
    return f"\n[{len(middle)} characters cut]\n"


def _keep(text: str, over: int) -> tuple[str, str, int]:
    """The head and tail of ``text`` to keep so that it loses at least ``over`` estimated tokens and room
    for the marker put between them (as much as it can, down to :data:`KEEP_MIN` characters), and the
    tokens cut."""
    before = estimate_text_tokens(text)
    need = over + _MARKER_TOKENS
    keep = len(text)
    # The estimate is not linear in characters (digits and non-ASCII weigh more), so shrink until it holds.
    while True:
        target = max(0, before - need)
        keep = max(KEEP_MIN, min(keep - 1, math.floor(keep * target / max(before, 1))))
        head, tail = text[: keep // 2], text[len(text) - (keep - keep // 2) :]
        tokens = before - estimate_text_tokens(head) - estimate_text_tokens(tail)
        if tokens >= need or keep <= KEEP_MIN:
            return head, tail, tokens


def _longest_first(messages: list[Message]) -> list[int]:
    """Indexes of the messages whose text can be cut (plain text content), longest first."""
    cuttable = [i for i, m in enumerate(messages) if isinstance(m.content, str) and len(m.content) > KEEP_MIN]
    return sorted(cuttable, key=lambda i: estimate_text_tokens(messages[i].text), reverse=True)


def _cut_entry(index: int, role: str, before: int, removed: int, tokens: int) -> dict[str, Any]:
    """A cut message: its position and role, its length, and the characters and tokens taken from it."""
    return {"index": index, "role": role, "chars_before": before, "chars_cut": removed, "tokens_cut": tokens}


def with_memory(messages: tuple[Message, ...], hits: Sequence[MemoryHit]) -> tuple[Message, ...]:
    """``messages`` with the hits after the leading system messages (where instructions end)."""
    if not hits:
        return messages
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    return (*messages[:at], memory_message(hits), *messages[at:])


def _size(req: FitRequest, messages: tuple[Message, ...]) -> int:
    return estimate_messages_tokens(messages, req.tools)


def _too_long(req: FitRequest, size: int, limit: int) -> str:
    return (
        f"the request to {req.model} is about {size} tokens but its context window of {req.window} tokens "
        f"leaves {limit} for input ({req.max_tokens} kept for the reply): shorten the input, or pass "
        f'overflow="truncate" or "summarize" to ctx.llm'
    )
