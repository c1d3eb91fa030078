"""What the rest of crewline tells observers: one small event per model call, step, run change,
review, memory retrieval, alert and trigger poll.

The events carry numbers and names, never payloads (the payloads stay in their owners' tables and blobs,
under retention); the one exception is opt-in: a model call's request and reply ride along only while an
observer has asked for them (:attr:`Observers.wants_content`). Components emit through :class:`Observers`,
which hands each event to every registered observer in turn; an observer that raises is logged and
skipped, so metrics or tracing can never fail a run or a model call. Observers must be quick and must not
block: anything slow (an export over the network) belongs on a queue of the observer's own.

Events are read-only by convention, not ``frozen``: a frozen dataclass of two dozen fields costs about
three times as much to build (each field goes through ``object.__setattr__``), and one is built for every
model call and step while anyone observes.

This module sits low (it imports only the standard library) so that models/, memory/, flows/ and server/
can all emit without importing each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "AlertEvent",
    "Event",
    "ModelCallEvent",
    "Observer",
    "Observers",
    "RetrievalEvent",
    "ReviewEvent",
    "RunEvent",
    "StepEvent",
    "TriggerEvent",
]

log = logging.getLogger("crewline.observe")


@dataclass(slots=True)
class ModelCallEvent:
    """One logical model call (after its retries and fallbacks), a cache hit, or a failure."""

    operation: Literal["chat", "embeddings"]
    requested: str  # the alias, tier or provider/model the caller named
    started_at: float  # Unix seconds
    duration_s: float
    provider: str | None = None
    model: str | None = None  # the model that answered (or was last tried)
    run_id: str | None = None
    workflow: str | None = None
    step: int | None = None
    prompt: str | None = None  # "name@version" of the prompt template, when known
    key: str | None = None  # the API key id of a proxy call
    streamed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    price_known: bool = True
    ttft_s: float | None = None
    attempts: int = 1
    cache_hit: bool = False
    error_type: str | None = None  # the crewline error class name; None on success
    # The call's request and reply (the gateway's own objects, not copies), only while an observer has
    # asked the hub for content (``Observers.wants_content``, set by ``[observe] capture_content``).
    request: Any = None
    response: Any = None


@dataclass(slots=True)
class StepEvent:
    """A step that ran live and reached an outcome (replayed steps emit nothing: nothing happened)."""

    run_id: str
    workflow: str
    step: int
    name: str
    kind: str  # step | tool | llm | approval | sleep | event | child | ...
    effect: str
    status: str  # done | failed | waiting | intent
    started_at: float
    duration_s: float
    attempts: int = 1
    error_type: str | None = None


@dataclass(slots=True)
class RunEvent:
    """A run changed state: started or resumed on a worker, parked, or ended."""

    run_id: str
    workflow: str
    status: Literal["started", "resumed", "parked", "completed", "failed", "cancelled"]
    at: float
    created_at: float
    queue: str = "default"
    trace_parent: str | None = None  # W3C traceparent stored with the run, when tracing is on
    error_type: str | None = None
    reason: str | None = None  # why it parked: "approval:...", "sleep", "event:..."


@dataclass(slots=True)
class ReviewEvent:
    """A review request was created or decided."""

    request_id: str
    run_id: str
    kind: str  # approval | outcome_unknown | budget
    status: str  # pending | approved | rejected | expired | closed | resolved
    risk: str
    at: float
    waited_s: float | None = None  # from creation to this decision


@dataclass(slots=True)
class RetrievalEvent:
    """A memory search: how many hits it returned and how long it took."""

    scopes: tuple[str, ...]
    k: int
    hits: int
    top_score: float | None
    started_at: float
    duration_s: float
    run_id: str | None = None
    workflow: str | None = None
    step: int | None = None


@dataclass(slots=True)
class AlertEvent:
    """An alert episode started or resolved."""

    rule: str
    state: Literal["firing", "resolved"]
    at: float
    summary: str
    value: float | None = None
    threshold: float | None = None


@dataclass(slots=True)
class TriggerEvent:
    """A trigger tried to start work: a webhook delivery, a cron tick, an inbox poll."""

    trigger: str  # e.g. "webhook:signup", "cron:daily_digest", "inbox:support"
    ok: bool
    at: float
    duration_s: float = 0.0
    error_type: str | None = None


Event = ModelCallEvent | StepEvent | RunEvent | ReviewEvent | RetrievalEvent | AlertEvent | TriggerEvent


class Observer(Protocol):
    """Anything that wants the events: metrics, traces, alert evaluation, a test."""

    def observe(self, event: Event) -> None: ...


@dataclass
class Observers:
    """The observers of one app; components hold this and call :meth:`emit`."""

    observers: list[Observer] = field(default_factory=list)
    # Whether model-call events should carry the request and reply: set by an observer that exports
    # content because the operator opted in; emitters leave them out otherwise.
    wants_content: bool = False

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def remove(self, observer: Observer) -> None:
        self.observers.remove(observer)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer.observe(event)
            except Exception:  # an observer's bug must never fail the work it observes
                log.exception("observer %s failed on %s", type(observer).__name__, type(event).__name__)

    def __bool__(self) -> bool:
        return bool(self.observers)
