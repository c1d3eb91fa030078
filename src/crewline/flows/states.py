"""The states a run and a step can be in, the step kinds, and where a parked run waits: defined once.

They are ``Literal`` types rather than enums because every one of them is a plain string in the database,
in JSON answers and on the command line: a ``Literal`` costs no conversion at those edges and mypy still
rejects a misspelt state wherever one is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "FINISHED",
    "RUN_STATES",
    "STEP_KINDS",
    "STEP_STATES",
    "Park",
    "RunStatus",
    "StepKind",
    "StepStatus",
]

RunStatus = Literal["pending", "running", "waiting", "paused", "failed", "completed", "cancelled"]
# intent: an irreversible call was about to happen; waiting: the run is parked on this step; retry: an
# operator asked for a failed tool call to be made again with the edited arguments its record now holds.
StepStatus = Literal["intent", "waiting", "done", "failed", "retry"]
# compensation: a registered compensation run while a run is undone (see flows/compensation.py);
# checkpoint: a named marker (``ctx.checkpoint``) that reruns and forks can start from;
# flag: an operator's flag as the run read it (see flows/step_flag.py).
StepKind = Literal[
    "step",
    "tool",
    "llm",
    "sleep",
    "event",
    "child",
    "approval",
    "compensation",
    "checkpoint",
    "flag",
    "reconcile",
]

RUN_STATES: tuple[RunStatus, ...] = get_args(RunStatus)
STEP_STATES: tuple[StepStatus, ...] = get_args(StepStatus)
STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)
FINISHED: tuple[RunStatus, ...] = ("failed", "completed", "cancelled")


@dataclass(frozen=True)
class Park:
    """Where a released run waits: its state, why (``wait_reason``), for which event, and until when.

    The constructors below are the one place each ``wait_reason`` is spelt.
    """

    status: RunStatus
    reason: str | None = None
    event: str | None = None
    wake_at: float | None = None

    @classmethod
    def released(cls, wake_at: float) -> Park:
        """Pending again (a graceful shutdown): any worker picks it up at ``wake_at``."""
        return cls("pending", None, None, wake_at)

    @classmethod
    def paused(cls, wake_at: float) -> Park:
        """Stopped at a step boundary because an operator asked for a pause: the park itself turns it
        ``paused`` while that request stands (a pause withdrawn meanwhile leaves it pending, due at once)."""
        return cls("pending", None, None, wake_at)

    @classmethod
    def sleep(cls, wake_at: float) -> Park:
        return cls("waiting", "sleep", None, wake_at)

    @classmethod
    def on_event(cls, event: str, wake_at: float | None) -> Park:
        return cls("waiting", f"event:{event}", event, wake_at)

    @classmethod
    def on_review(cls, request_id: str, wake_at: float | None = None) -> Park:
        return cls("waiting", f"approval:{request_id}", None, wake_at)

    @classmethod
    def on_operator(cls, kind: str, request_id: str) -> Park:
        """Waiting for an operator to settle a failed run or a failed compensation (review ``kind``)."""
        return cls("waiting", f"{kind}:{request_id}")

    @classmethod
    def on_child(cls, child_id: str) -> Park:
        return cls("waiting", f"child:{child_id}")

    @classmethod
    def outcome_unknown(cls, step_no: int, name: str) -> Park:
        return cls("waiting", f"outcome unknown: step {step_no} ({name})")
