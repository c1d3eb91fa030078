"""The short-term conversation window: token budget, summarisation hook, dropping without one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from crewline.errors import InvalidInput
from crewline.memory.window import ConversationWindow, Message
from crewline.store import Database

from .conftest import run


def test_window_keeps_everything_under_budget(db: Database) -> None:
    w = ConversationWindow(db, "conv:1", max_tokens=1000)
    run(w.add("user", "hello"))
    run(w.add("assistant", "hi, how can I help?"))
    assert [(m.role, m.content) for m in run(w.messages())] == [
        ("user", "hello"),
        ("assistant", "hi, how can I help?"),
    ]


def test_over_budget_folds_oldest_turns_into_a_summary(db: Database) -> None:
    seen: list[list[str]] = []

    async def summarise(messages: Sequence[Message]) -> str:
        seen.append([m.content for m in messages])
        return f"summary of {len(messages)}"

    w = ConversationWindow(db, "conv:1", max_tokens=40, keep_recent=2, summarise=summarise, count_tokens=len)
    for i in range(6):
        run(w.add("user", f"turn {i} ...."))  # 11 tokens each
    window = run(w.messages())
    assert window[0].summary and window[0].role == "summary"
    assert [m.content for m in window[-2:]] == ["turn 4 ....", "turn 5 ...."]
    assert sum(m.tokens for m in window) <= 40
    # the second fold includes the first summary, so nothing is lost
    assert len(seen) >= 2 and seen[1][0].startswith("summary of")
    assert len([m for m in window if m.summary]) == 1


def test_without_a_summariser_oldest_turns_are_dropped(db: Database) -> None:
    w = ConversationWindow(db, "conv:2", max_tokens=30, keep_recent=1, count_tokens=len)
    for i in range(5):
        run(w.add("user", f"message {i}"))  # 9 tokens each
    assert [m.content for m in run(w.messages())][-1] == "message 4"
    assert run(w.tokens()) <= 30
    run(w.clear())
    assert run(w.messages()) == []


def test_bad_turns(db: Database) -> None:
    w = ConversationWindow(db, "conv:3")
    with pytest.raises(InvalidInput, match="role"):
        run(w.add("robot", "x"))
    with pytest.raises(InvalidInput, match="content"):
        run(w.add("user", ""))
    with pytest.raises(InvalidInput, match="scope"):
        ConversationWindow(db, "bad scope")
