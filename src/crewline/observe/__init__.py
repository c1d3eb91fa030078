"""Observability: the events crewline emits, and (above them) metrics, traces, reports and alerts.

The emitting half (:mod:`crewline.observe.events`) sits low, beside the store, so every component can
emit; what consumes the events and the database (metrics, traces, reports, alert evaluation) sits above
the engine.
"""

from __future__ import annotations

from .events import (
    AlertEvent,
    Event,
    ModelCallEvent,
    Observer,
    Observers,
    RetrievalEvent,
    ReviewEvent,
    RunEvent,
    StepEvent,
    TriggerEvent,
)

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
