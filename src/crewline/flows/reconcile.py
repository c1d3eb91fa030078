"""What a reconcile check answers: whether an irreversible step whose outcome a crash left unknown happened.

``ctx.step(charge, ..., effect="irreversible", reconcile=charged)``: when a step is found with only its
intent (the process died between committing the intent and recording the result), the journal does not
guess and no longer has to ask an operator first. It calls ``charged`` with the step's arguments (and its
``idempotency_key``, the one the action was sent with) as a step of its own (kind ``reconcile``, numbered
right after the action), and the answer settles the action:

- ``Reconciled.done(output)``: it happened; the action's step is recorded done with ``output``.
- ``Reconciled.not_done()``: it did not; the action runs again, with the same idempotency key.
- ``Reconciled.unknown()``: the system of record cannot say; the run waits for an operator as before.

The check's record is replayed like any step's, so a crash during or after the check asks nothing twice.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

__all__ = ["Reconciled", "check_step_name"]


class Reconciled(pydantic.BaseModel):
    """A reconcile check's answer; build it with :meth:`done`, :meth:`not_done` or :meth:`unknown`."""

    model_config = pydantic.ConfigDict(frozen=True)

    status: Literal["done", "not_done", "unknown"]
    output: Any = None

    @classmethod
    def done(cls, output: Any = None) -> Reconciled:
        return cls(status="done", output=output)

    @classmethod
    def not_done(cls) -> Reconciled:
        return cls(status="not_done")

    @classmethod
    def unknown(cls) -> Reconciled:
        return cls(status="unknown")


def check_step_name(action: str) -> str:
    """The name of the check step of the action named ``action``."""
    return f"reconcile {action}"
