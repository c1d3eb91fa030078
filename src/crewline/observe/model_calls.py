"""Which prompt version a model call renders, for its :class:`~crewline.observe.events.ModelCallEvent`.

The gateway's call record does not know which prompt template produced the messages, but the workflow's
llm step does: it names the prompt in :func:`prompt_for_calls` around its gateway call, and since the
gateway reports the call in the caller's task, the app's ``on_call`` reads it with :func:`call_prompt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["call_prompt", "prompt_for_calls"]

# Per task, not configuration: which prompt version the model calls made in this task render.
_prompt: ContextVar[str | None] = ContextVar("crewline_call_prompt", default=None)


@contextmanager
def prompt_for_calls(prompt: str | None) -> Iterator[None]:
    """Model calls finished inside this block carry ``prompt`` ("name@version") on their events."""
    token = _prompt.set(prompt)
    try:
        yield
    finally:
        _prompt.reset(token)


def call_prompt() -> str | None:
    """The prompt named by the innermost :func:`prompt_for_calls` of this task, if any."""
    return _prompt.get()
