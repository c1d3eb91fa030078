"""A run as the engine and its readers see it (:class:`RunRecord`), its ids, and the cursors that page
through lists of runs. The rows behind it are :mod:`.run_store`'s."""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from .states import RunStatus

__all__ = ["RunRecord", "new_run_id", "new_trace_parent", "page_cursor", "parse_cursor"]


def new_run_id() -> str:
    return uuid.uuid4().hex


def new_trace_parent() -> str:
    """A W3C ``traceparent`` for a new run: a fresh trace id and the span id its run span will have.

    Decided once, when the run is created, and stored with it, so the spans of every process that
    executes the run (before and after it parks) join one trace under one run span.
    """
    ids = os.urandom(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-01"


@dataclass
class RunRecord:
    id: str
    workflow: str
    version: str | None
    queue: str
    priority: int
    status: RunStatus
    input: Any
    output: Any
    error: dict[str, Any] | None
    idempotency_key: str | None
    parent_id: str | None
    parent_step: int | None
    forked_from: str | None
    fork_step: int | None
    wait_reason: str | None
    wait_event: str | None
    wake_at: float | None
    lease_owner: str | None
    lease_until: float | None
    cancel_requested: bool
    recoveries: int
    created_at: float
    updated_at: float
    finished_at: float | None
    overrides: dict[str, Any] | None = None  # a fork's variations: {"model": ..., "prompts": [...]}
    started_by: str | None = None  # the id of the API key that started it over HTTP
    pruned_at: float | None = None  # when retention dropped its input, output and steps
    # W3C traceparent decided when the run was created: its trace and the span id of the run's span.
    trace_parent: str | None = None
    attempt: int = 1  # 1, then one more each time the run is rerun from a step
    pause_requested: bool = False  # asked to pause at its next step boundary
    pause_scope: str | None = None  # who paused it: "run", "workflow" or "queue"
    shadow: bool = False  # performs no irreversible effect: its steps record what they would have done
    shadow_of: str | None = None  # the live run a shadow run runs beside

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["cancel_requested"] = bool(self.cancel_requested)
        data["pause_requested"] = bool(self.pause_requested)
        return data


def page_cursor(run: RunRecord) -> str:
    """The cursor of the page after ``run`` (the last run of a page), for :attr:`RunQuery.after`."""
    return base64.urlsafe_b64encode(f"{run.created_at!r}|{run.id}".encode()).decode().rstrip("=")


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a :func:`page_cursor` names; :class:`InvalidInput` for anything else."""
    problem = "the page cursor is not valid: follow the next-page link of a previous page"
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, rid = text.split("|", 1)
        value = float(created)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(problem) from None
    if value != value or "\x00" in rid:  # NaN, or text the database would refuse
        raise InvalidInput(problem)
    return value, rid
