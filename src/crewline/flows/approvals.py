"""``ctx.approve``: park the run on a review request until a person (or its timeout policy) decides."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pydantic

from ..config import parse_duration
from ..errors import InvalidInput
from ..store.database import Conn
from ..store.payloads import dump
from .engine import Suspend
from .journal import Entry, Journal, Outcome
from .review_requests import (
    ON_TIMEOUT,
    Decision,
    NewRequest,
    escalate,
    get_request,
    set_status,
    type_name,
)
from .states import Park

__all__ = ["Approval", "request_approval"]


@dataclass(frozen=True)
class Approval:
    """What ``ctx.approve`` was asked (see its docstring)."""

    action: str
    preview: Any = None
    risk: str | None = None
    timeout: float | str | None = None
    on_timeout: str = "reject"
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Pending:
    """A live approval step: its request and when (on the engine's clock) it times out."""

    entry: Entry
    request_id: str
    deadline: float | None
    on_timeout: str


async def request_approval(journal: Journal, ask: Approval) -> Decision:
    if ask.on_timeout not in ON_TIMEOUT:
        raise InvalidInput(f"on_timeout must be reject, approve or escalate, got {ask.on_timeout!r}")
    engine = journal.engine
    level = engine.risk_policy.risk_for(ask.action, ask.risk)
    entry = await journal.begin(ask.action, "approval")
    rec = entry.record
    if rec is not None and rec.status == "done":
        return _decision(rec.output, ask.preview)
    if level == "low":
        auto = {"approved": True, "status": "auto", "decided_by": "policy", "decided_at": time.time()}
        await journal.record(entry, Outcome("done", dump(auto)))
        return _decision(auto, ask.preview)
    # high risk is never approved by a clock
    on_timeout = "escalate" if level == "high" and ask.on_timeout == "approve" else ask.on_timeout
    if rec is not None:
        deadline = rec.output.get("expires_at")
    else:
        deadline = None if ask.timeout is None else engine.clock() + parse_duration(ask.timeout)
    pending = _Pending(entry, journal.step_key(entry.n), deadline, on_timeout)
    new = None
    if rec is None:
        new = NewRequest(
            request_id=pending.request_id,
            run_id=journal.run_id,
            step_no=entry.n,
            kind="approval",
            action=ask.action,
            risk=level,
            preview=_plain(ask.preview),
            context={**journal.provenance_summary(), **(ask.context or {})},
            on_timeout=on_timeout,
            preview_type=type_name(ask.preview),
            expires_at=_real_time(journal, deadline),
        )

    def attempt(conn: Conn) -> dict[str, Any] | None:
        if new is not None:
            journal.new_request(conn, new)
        return _settle(journal, conn, pending)

    decided = await journal.transact(attempt)
    if decided is not None:
        return _decision(decided, ask.preview)
    raise Suspend(f"waiting for review {pending.request_id}")


def _settle(journal: Journal, conn: Conn, pending: _Pending) -> dict[str, Any] | None:
    """Record the decision if there is one now; else record the wait and park the run on the request."""
    decision, escalated = _current_decision(conn, pending, journal.engine.clock())
    if decision is not None:
        decision["request_id"] = pending.request_id
        journal.write(conn, pending.entry, Outcome("done", dump(decision)))
        return decision
    waiting = {"request": pending.request_id, "expires_at": pending.deadline}
    journal.write(conn, pending.entry, Outcome("waiting", dump(waiting)))
    wake = None if escalated else _real_time(journal, pending.deadline)
    journal.park(conn, Park.on_review(pending.request_id, wake))
    return None


def _current_decision(conn: Conn, pending: _Pending, now: float) -> tuple[dict[str, Any] | None, bool]:
    """(the decision if there is one now, whether the request is escalated)."""
    req = get_request(conn, pending.request_id)
    if req.status in ("approved", "rejected"):
        decision = {
            "approved": req.status == "approved",
            "status": req.status,
            "decided_by": req.decided_by,
            "decided_at": req.decided_at,
            "comment": req.comment,
            "edited": req.edit,
        }
        return decision, req.escalated
    if pending.deadline is not None and not req.escalated and now >= pending.deadline:
        timed_out = _apply_timeout(conn, pending.request_id, pending.on_timeout)
        return timed_out, timed_out is None
    return None, req.escalated


def _apply_timeout(conn: Conn, request_id: str, on_timeout: str) -> dict[str, Any] | None:
    if on_timeout == "escalate":
        escalate(conn, request_id)
        return None
    status = "approved" if on_timeout == "approve" else "expired"
    set_status(conn, request_id, status, by="timeout")
    return {
        "approved": status == "approved",
        "status": status,
        "decided_by": "timeout",
        "decided_at": time.time(),
    }


def _real_time(journal: Journal, deadline: float | None) -> float | None:
    """The wall-clock moment matching ``deadline`` on the engine's clock."""
    return None if deadline is None else time.time() + (deadline - journal.engine.clock())


def _plain(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return pydantic.TypeAdapter(Any).dump_python(value, mode="json")


def _decision(data: dict[str, Any], preview: Any) -> Decision:
    edited = data.get("edited")
    if edited is not None and isinstance(preview, pydantic.BaseModel):
        edited = type(preview).model_validate(edited)
    return Decision(
        approved=bool(data["approved"]),
        status=str(data["status"]),
        edited=edited,
        comment=data.get("comment"),
        decided_by=data.get("decided_by"),
        decided_at=data.get("decided_at"),
        request_id=data.get("request_id"),
    )
