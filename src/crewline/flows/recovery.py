"""What an operator does to undo a run or settle its failure: each a function over one transaction.

``request_compensation`` asks for a run's registered compensations to run (cancel with compensation, undo);
``settle`` answers a ``failure`` review (retry the failed step, perhaps with edited tool arguments or another
model or prompt; skip it with an output; abandon the run, which compensates it) or a ``compensation``
review (retry the compensation, skip it, or mark it done by hand). Each checks before it changes anything,
so a refused request leaves everything as it was; the worker does the rest (see :mod:`.compensation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInput, InvalidRunState
from ..store.database import Conn
from ..store.payloads import dump
from .definitions import validate_as
from .review_requests import ReviewRequest, get_request, lock_request, settle_request
from .run_store import FINISHED, CompensationPlan, get_run, plan_compensation, wake_run
from .step_store import compensable_steps, retry_step, skip_step, step_state

__all__ = ["Choice", "Settlement", "request_compensation", "settle"]

Choice = Literal["retry", "skip", "abandon", "done"]
_CHOICES: dict[str, tuple[Choice, ...]] = {
    "failure": ("retry", "skip", "abandon"),
    "compensation": ("retry", "skip", "done"),
}


@dataclass(frozen=True)
class Settlement:
    """An operator's answer to a failure or compensation review.

    ``output``: with skip of a failed step, what the step returns instead (validated as its return type).
    ``arguments``: with retry of a failed tool call, the edited arguments. ``overrides``: with retry, the
    model or prompt versions the rest of the run uses (as ``runs fork --set``).
    """

    choice: Choice
    by: str
    comment: str | None = None
    output: Any = None
    arguments: Any = None
    overrides: dict[str, Any] | None = None


def request_compensation(conn: Conn, run_id: str, plan: CompensationPlan) -> str:
    """Ask for the run's compensations (``plan.steps`` only, if given); refused when there is nothing to
    compensate, naming the steps that have one."""
    run = get_run(conn, run_id)
    if plan.why == "cancel" and run.status in FINISHED:
        raise InvalidRunState(
            f"run {run_id} is already {run.status}; nothing to cancel (undo it with `crewline runs undo {run_id}`)"
        )
    if run.error is not None and "compensated" in run.error:
        raise InvalidRunState(f"run {run_id} was already compensated ({run.error.get('message')})")
    have = compensable_steps(conn, run_id)
    listed = ", ".join(f"{n} ({name}, undone by {undo})" for n, (name, undo) in have.items())
    if not have:
        without = " cancel it without --compensate" if plan.why == "cancel" else " nothing to undo"
        raise InvalidInput(f"run {run_id} has no finished step with a compensation;{without}")
    for n in plan.steps or ():
        if n not in have:
            raise InvalidInput(f"step {n} of run {run_id} has no compensation; steps with one: {listed}")
    return plan_compensation(conn, run_id, plan)


def settle(conn: Conn, request_id: str, answer: Settlement, blob_threshold: int) -> ReviewRequest:
    """Apply ``answer`` to a pending failure or compensation review and make its run due."""
    req = _pending(conn, request_id, answer.choice)
    step = req.step_no
    state = step_state(conn, req.run_id, step)
    failed = state is not None and state[0] == "failed"
    if answer.choice in ("skip", "done") and not failed:
        raise InvalidRunState(
            f"run {req.run_id} did not fail in a step ({req.action}): retry or abandon it instead"
        )
    if answer.choice == "skip" and state is not None and state[1] not in ("step", "tool", "compensation"):
        raise InvalidInput(
            f"step {step} is of kind {state[1]}: only a step or a tool call is skipped with an output; retry "
            "it (a model call perhaps with --set model=...) or abandon the run"
        )
    edit: Any = None
    if answer.choice == "abandon":
        plan_compensation(conn, req.run_id, CompensationPlan("abandon", None, answer.by))
    elif answer.choice == "retry":
        edit = _retry(conn, req, answer, failed, blob_threshold)
    else:
        edit = _given_output(req, answer)
        skip_step(conn, req.run_id, step, dump(edit, "--output"), blob_threshold)
        wake_run(conn, req.run_id)
    data = None if edit is None else dump(edit, "the settlement")
    settle_request(
        conn, request_id, answer.choice, by=answer.by, comment=answer.comment, edit=data, blobs=blob_threshold
    )
    return get_request(conn, request_id)


def _pending(conn: Conn, request_id: str, choice: Choice) -> ReviewRequest:
    req = lock_request(conn, request_id)
    allowed = _CHOICES.get(req.kind)
    if allowed is None:
        raise InvalidInput(
            f"request {request_id} is a {req.kind} request: retry, skip, abandon and done settle failure and "
            "compensation reviews; approve or reject it (or resolve an unknown outcome)"
        )
    if choice not in allowed:
        raise InvalidInput(f"a {req.kind} review is settled with {', '.join(allowed)}, not {choice}")
    if req.status != "pending":
        by = f" by {req.decided_by}" if req.decided_by else ""
        raise InvalidRunState(f"request {request_id} is already {req.status}{by}; nothing changed")
    run = get_run(conn, req.run_id)
    if run.status != "waiting" or run.wait_reason != f"{req.kind}:{request_id}":
        raise InvalidRunState(f"run {req.run_id} is {run.status}, no longer waiting on request {request_id}")
    return req


def _retry(conn: Conn, req: ReviewRequest, answer: Settlement, failed: bool, blob_threshold: int) -> Any:
    """Execute the failed step (or compensation) again; returns what the operator changed, if anything."""
    state = step_state(conn, req.run_id, req.step_no)
    if answer.arguments is not None and (state is None or state[1] != "tool"):
        raise InvalidInput(
            f"step {req.step_no} is not a tool call: only a tool's arguments can be edited for a retry; "
            "vary a model call with --set model=... or prompt=..."
        )
    if answer.overrides and req.kind != "failure":
        raise InvalidInput("--set varies a failed run's retry, not a compensation's")
    if answer.arguments is not None:
        _same_shape(
            req.preview.get("step_input") if isinstance(req.preview, dict) else None, answer.arguments
        )
    arguments = None if answer.arguments is None else dump(answer.arguments, "--input")
    if failed:
        retry_step(conn, req.run_id, req.step_no, arguments, blob_threshold)
    overrides = None
    if answer.overrides:
        overrides = {**(get_run(conn, req.run_id).overrides or {}), **answer.overrides}
    wake_run(conn, req.run_id, overrides)
    changed = {"arguments": answer.arguments, "overrides": answer.overrides}
    return {k: v for k, v in changed.items() if v} or None


def _same_shape(recorded: Any, edited: Any) -> None:
    """Edited arguments name the arguments the call was made with, each a value of the same JSON type (the
    tool validates them fully when it is called again)."""
    if not isinstance(edited, dict) or not isinstance(recorded, dict):
        raise InvalidInput(
            "--input for a tool call is a JSON object of its arguments, as the review shows them"
        )
    unknown = sorted(set(edited) - set(recorded))
    if unknown:
        raise InvalidInput(f"--input names unknown arguments {', '.join(unknown)}: use {', '.join(recorded)}")
    for name, value in edited.items():
        was = recorded[name]
        if was is not None and value is not None and _kind(was) != _kind(value):
            raise InvalidInput(
                f"--input {name} must be a {_kind(was)} like the recorded one, got a {_kind(value)}"
            )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {dict: "JSON object", list: "JSON array", str: "string"}
    return names.get(type(value), type(value).__name__)


def _given_output(req: ReviewRequest, answer: Settlement) -> Any:
    if req.kind == "compensation":
        return {"skipped_by" if answer.choice == "skip" else "done_by": answer.by}
    preview = req.preview if isinstance(req.preview, dict) else {}
    if answer.output is None and preview.get("output_type") not in (None, "NoneType"):
        raise InvalidInput(
            f"skipping step {req.step_no} needs the output it returns instead (a {preview['output_type']}): "
            "pass --output JSON"
        )
    return validate_as(preview.get("output_type"), answer.output, f"the output of step {req.step_no}")
