"""How a run ends when it must be undone or looked at: compensations, and failures sent to an operator.

Once the workflow function has ended (failed, cancelled, or returned under an operator's undo),
:func:`settle_end` decides what follows. A failed run of an ``on_failure="review"`` workflow parks on a
review request (kind ``failure``) showing the error, the step and its input. Otherwise, when the run failed
or an operator asked for it (cancel with compensation, undo, abandon), the compensations that the finished
steps registered run in reverse step order, each a durable step of kind ``compensation`` numbered after the
steps the run reached. A replay after a crash reaches the same numbers, so a compensation already recorded
is never run twice, and one that fails parks the run on a review request (kind ``compensation``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from ..errors import StepError
from .definitions import Workflow
from .journal import Compensation, Journal, OperatorAsk
from .run_store import CompensationPlan
from .states import RunStatus
from .step_call import Call, fn_name, run_call

__all__ = ["End", "settle_end"]


@dataclass(frozen=True)
class End:
    """How the workflow function ended: the run's status, output and error so far."""

    status: RunStatus
    output: bytes | None = None
    error: dict[str, Any] | None = None


async def settle_end(journal: Journal, wf: Workflow, plan: CompensationPlan | None, end: End) -> End:
    """The run's end after any review and compensation; raises ``Suspend`` when an operator must act."""
    if plan is None:
        if end.status != "failed":
            return end
        if wf.on_failure == "review":
            await _ask_about_failure(journal, end.error or {})
        if not journal.compensations:
            return end
    done = await _compensate(journal, None if plan is None else plan.steps)
    return _noted(end, plan, done)


async def _compensate(journal: Journal, only: tuple[int, ...] | None) -> list[int]:
    """Run the registered compensations (those of ``only``'s steps, if given) newest first."""
    journal.unwinding = True
    done = []
    for comp in reversed(journal.compensations):
        if only is not None and comp.step_no not in only:
            continue
        await _undo(journal, comp)
        done.append(comp.step_no)
    return done


async def _undo(journal: Journal, comp: Compensation) -> None:
    # A partial hides the compensation's return annotation: what it returns is recorded as plain JSON, and
    # an operator who skips it or did it by hand records null, which a replay must read back as it is.
    call = Call(
        functools.partial(comp.fn), (comp.result,), {}, fn_name(comp.fn), "compensation", "idempotent"
    )
    try:
        await run_call(journal, call)
    except StepError as e:
        preview = {
            "undoing_step": comp.step_no,
            "step_name": comp.step_name,
            "compensation": call.name,
            "compensation_step": e.step,
            "error": {"type": e.error_type, "message": e.message},
            "step_result": comp.result,
        }
        action = f"compensation {call.name} of step {comp.step_no} ({comp.step_name}) failed"
        await journal.ask_operator(OperatorAsk("compensation", e.step, action, preview))


async def _ask_about_failure(journal: Journal, error: dict[str, Any]) -> None:
    failed = journal.failed_step
    step = error.get("step")
    name = error.get("step_name")
    same = failed is not None and failed.n == step
    preview = {
        "error": {"type": error.get("type"), "message": error.get("message")},
        "step": step,
        "step_name": name,
        "step_input": failed.input if same and failed is not None else None,
        "output_type": failed.output_type if same and failed is not None else None,
        "run_input": journal.run.input,
    }
    where = f"step {step} ({name})" if name else f"step {step}"
    action = f"run failed at {where}: {error.get('type')}"
    await journal.ask_operator(OperatorAsk("failure", int(step or 0), action, preview))


def _noted(end: End, plan: CompensationPlan | None, done: list[int]) -> End:
    """The run's end saying which steps were compensated, and on whose request."""
    steps = ", ".join(str(n) for n in done) or "none registered"
    note = f"compensated steps {steps}"
    if plan is None:
        error = {**(end.error or {}), "compensated": done}
        return replace(end, error={**error, "message": f"{error.get('message')} ({note})"})
    if plan.why == "abandon":
        error = {**(end.error or {}), "compensated": done, "abandoned_by": plan.by}
        message = f"{error.get('message')} (abandoned by {plan.by}; {note})"
        return End("failed", None, {**error, "message": message})
    kind, verb = ("Undone", "undone") if plan.why == "undo" else ("Cancelled", "cancelled")
    message = f"{verb} by {plan.by}; {note}"
    error = {"type": kind, "message": message, "step": None, "compensated": done}
    return End("cancelled", end.output, error)
