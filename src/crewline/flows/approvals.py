"""``ctx.approve``: park the run on a review request until a person (or its timeout policy) decides."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pydantic

from ..config import parse_duration
from ..errors import InvalidInput
from ..store.payloads import dump, load
from .engine import Suspend
from .review import ON_TIMEOUT, Decision, create_request, set_status, type_name

if TYPE_CHECKING:
    from .context import Context

__all__ = ["request_approval"]


async def request_approval(
    ctx: Context, action: str, *, preview: Any, risk: str | None, timeout: float | str | None,
    on_timeout: str, context: dict[str, Any] | None,
) -> Decision:  # fmt: skip
    if on_timeout not in ON_TIMEOUT:
        raise InvalidInput(f"on_timeout must be reject, approve or escalate, got {on_timeout!r}")
    engine = ctx._engine
    level = engine.risk_policy.risk_for(action, risk)
    n, rec = await ctx._begin(action, "approval")
    if rec is not None and rec.status == "done":
        return _decision(rec.output, preview)
    started = rec.started_at if rec is not None else time.time()
    if level == "low":
        auto = {"approved": True, "status": "auto", "decided_by": "policy", "decided_at": time.time()}
        from .context import _Call  # the context module imports this one

        await ctx._record_call(
            _Call(n, action, "approval", "read", started, None), "done", dump(auto), None, 1
        )
        return _decision(auto, preview)
    if level == "high" and on_timeout == "approve":
        on_timeout = "escalate"  # high risk is never approved by a clock
    request_id = f"{ctx.run_id}:{n}"
    if rec is not None:
        deadline = rec.output.get("expires_at")
    else:
        deadline = None if timeout is None else engine.clock() + parse_duration(timeout)
    shown = {**ctx.provenance_summary(), **(context or {})}
    preview_json = _plain(preview)

    def attempt(conn: Any) -> tuple[str, dict[str, Any] | None]:
        if rec is None:
            create_request(
                conn, request_id=request_id, run_id=ctx.run_id, step_no=n, kind="approval", action=action,
                risk=level, preview=preview_json, preview_type=type_name(preview), context=shown,
                on_timeout=on_timeout, expires_at=_real_time(engine, deadline), blob_threshold=engine.blob_threshold,
            )  # fmt: skip
        decision, escalated = _current_decision(conn, request_id, deadline, engine.clock(), on_timeout)
        if decision is not None:
            decision["request_id"] = request_id
            ctx._write_wait_step(conn, n, action, "approval", "done", dump(decision), None, started)
            return "done", decision
        waiting = {"request": request_id, "expires_at": deadline}
        ctx._write_wait_step(conn, n, action, "approval", "waiting", dump(waiting), None, started)
        wake = None if escalated else _real_time(engine, deadline)
        engine.park(
            conn, ctx.run_id, status="waiting", reason=f"approval:{request_id}", event=None, wake_at=wake
        )
        return "parked", None

    outcome, decided = await engine.checkpoint(ctx.run_id, ctx._owner, attempt)
    if outcome == "done" and decided is not None:
        return _decision(decided, preview)
    raise Suspend(f"waiting for review {request_id}")


def _current_decision(
    conn: Any, request_id: str, deadline: float | None, now: float, on_timeout: str
) -> tuple[dict[str, Any] | None, bool]:
    """(the decision if there is one now, whether the request is escalated)."""
    row = conn.one(
        "SELECT status, escalated, decided_by, decided_at, comment, edit, edit_blob FROM reviews WHERE id = ?",
        (request_id,),
    )
    status, escalated = row[0], bool(row[1])
    if status in ("approved", "rejected"):
        decision = {"approved": status == "approved", "status": status, "decided_by": row[2],
                    "decided_at": row[3], "comment": row[4], "edited": load(conn, row[5], row[6])}  # fmt: skip
        return decision, escalated
    if deadline is not None and not escalated and now >= deadline:
        timed_out = _apply_timeout(conn, request_id, on_timeout)
        return timed_out, timed_out is None
    return None, escalated


def _apply_timeout(conn: Any, request_id: str, on_timeout: str) -> dict[str, Any] | None:
    if on_timeout == "escalate":
        conn.execute("UPDATE reviews SET escalated = 1, risk = 'high' WHERE id = ?", (request_id,))
        return None
    approved = on_timeout == "approve"
    set_status(conn, request_id, "approved" if approved else "expired", by="timeout")
    return {"approved": approved, "status": "approved" if approved else "expired", "decided_by": "timeout",
            "decided_at": time.time()}  # fmt: skip


def _real_time(engine: Any, deadline: float | None) -> float | None:
    """The wall-clock moment matching ``deadline`` on the engine's clock."""
    return None if deadline is None else time.time() + (deadline - engine.clock())


def _plain(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return pydantic.TypeAdapter(Any).dump_python(value, mode="json")


def _decision(data: dict[str, Any], preview: Any) -> Decision:
    edited = data.get("edited")
    if edited is not None and isinstance(preview, pydantic.BaseModel):
        edited = type(preview).model_validate(edited)
    return Decision(
        approved=bool(data["approved"]), status=str(data["status"]), edited=edited, comment=data.get("comment"),
        decided_by=data.get("decided_by"), decided_at=data.get("decided_at"), request_id=data.get("request_id"),
    )  # fmt: skip
