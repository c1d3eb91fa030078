"""Model calls as events: the gateway's call record turned into a :class:`ModelCallEvent`.

The gateway reports each finished call to its ``on_call`` callback; :func:`call_observer` is that callback
for an :class:`Observers` hub. The call record does not know which prompt template produced the messages,
but the workflow's llm step does: it names the prompt in :func:`prompt_for_calls` around its gateway call,
and since the gateway reports the call in the caller's task, the event picks it up from the context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..models.records import CallRecord
from .events import ModelCallEvent, Observers

__all__ = ["call_event", "call_observer", "prompt_for_calls"]

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


def call_event(record: CallRecord) -> ModelCallEvent:
    """The event of one finished call (its retries and fallbacks included)."""
    usage = record.usage
    return ModelCallEvent(
        operation="embeddings" if record.kind == "embed" else "chat",
        requested=record.requested,
        started_at=record.started_at,
        duration_s=(record.latency_ms or 0.0) / 1000,
        provider=record.provider,
        model=record.model,
        run_id=record.run_id,
        workflow=record.workflow,
        step=record.step,
        prompt=_prompt.get(),
        key=record.virtual_key,
        streamed=record.kind == "stream",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=record.cost,
        price_known=record.price_known,
        ttft_s=None if record.ttft_ms is None else record.ttft_ms / 1000,
        attempts=record.attempts,
        cache_hit=record.cache_hit,
        error_type=record.error_class if record.status != "ok" else None,
    )


def call_observer(hub: Observers) -> Callable[[CallRecord], None]:
    """The gateway's ``on_call`` callback emitting to ``hub`` (nothing is built while it has no observers)."""

    def on_call(record: CallRecord) -> None:
        if hub:
            hub.emit(call_event(record))

    return on_call
