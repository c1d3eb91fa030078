"""``POST /hooks/{name}``: a signed webhook starts the workflow mapped to it in ``crewline.toml``.

The body is read up to the hook's size limit, its signature checked against the hook's secret and
timestamp tolerance, and then, in one transaction, the signature is remembered (a second arrival is a
replay: 409) and the run created. ``X-Crewline-Delivery``, when sent, makes a sender's retry of the same
delivery (freshly signed) return the first run instead of starting another; the same id with another
body is a conflict (409), never silently the first run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, Field

from ...errors import InvalidInput
from ...flows.run_store import get_run
from ...observe.events import TriggerEvent
from ...signing import SignatureError, verify
from ...store.database import Conn
from ...store.payloads import parse_json
from ..config import HookConfig
from ..deliveries import is_replay, record_delivery
from ..errors import ApiError
from ..starting import PreparedRun, prepare_run
from ..state import state_of, status_url
from ._body import read_body

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])


class Accepted(BaseModel):
    run_id: str
    created: bool = Field(description="False when X-Crewline-Delivery named a delivery already received.")
    status_url: str = Field(description="GET it with an API key to follow the run.")


@router.post(
    "/hooks/{name}",
    status_code=202,
    response_model=Accepted,
    summary="Receive a signed webhook and start its workflow",
    responses={
        401: {"description": "Missing, malformed, stale or wrong signature."},
        404: {"description": "No hook of that name is configured."},
        409: {
            "description": "This signed delivery was already received (a replay), or its delivery id "
            "started a run with another body."
        },
        413: {"description": "The body is over the hook's max_body."},
    },
)
async def receive_hook(
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$")],
    request: Request,
    x_crewline_timestamp: Annotated[str | None, Header(max_length=40)] = None,
    x_crewline_signature: Annotated[str | None, Header(max_length=1000)] = None,
    x_crewline_delivery: Annotated[str | None, Header(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")] = None,
) -> Accepted:
    state = state_of(request)
    hook = state.config.hooks.get(name)
    if hook is None:
        raise ApiError(404, "unknown_hook", f"no webhook named {name!r} is configured ([webhooks.{name}])")
    delivery = _Delivery(request, hook, x_crewline_timestamp, x_crewline_signature, x_crewline_delivery)
    began = time.time()
    try:
        accepted = await _receive(delivery)
    except Exception as e:  # refused (bad signature, replay, too large, bad input): reported, then answered
        _report(request, name, began, e.type if isinstance(e, ApiError) else type(e).__name__)
        raise
    _report(request, name, began, None)
    return accepted


@dataclass(frozen=True)
class _Delivery:
    request: Request
    hook: HookConfig
    timestamp: str | None
    signature: str | None
    delivery_id: str | None


def _report(request: Request, name: str, began: float, error_type: str | None) -> None:
    """A delivery to a configured hook is a trigger event, accepted or not (unknown names are not: a
    scanner's made-up names must not become metric labels)."""
    observers = state_of(request).app.observers
    if observers:
        now = time.time()
        observers.emit(TriggerEvent(f"webhook:{name}", error_type is None, now, now - began, error_type))


async def _receive(d: _Delivery) -> Accepted:
    request, hook, name = d.request, d.hook, d.hook.name
    x_crewline_timestamp, x_crewline_signature, x_crewline_delivery = d.timestamp, d.signature, d.delivery_id
    state = state_of(request)
    body = await read_body(request, hook.max_body)
    try:
        signature = verify(
            hook.secret, body, x_crewline_timestamp, x_crewline_signature, tolerance=hook.tolerance
        )
    except SignatureError as e:
        raise ApiError(401, "bad_signature", str(e)) from None
    key = None if x_crewline_delivery is None else f"hook:{name}:{x_crewline_delivery}"
    prepared = prepare_run(state.app, hook.workflow, _parse(body), idempotency_key=key)
    try:
        started = await state.app.db.write(lambda conn: _record(conn, hook, signature, prepared))
    except _Replay:
        started = None
    except _Conflict as e:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"delivery {x_crewline_delivery!r} to hook {name!r} already started run {e.run_id} with another "
            "body; send a different event with a new X-Crewline-Delivery id",
        ) from None
    if started is None:
        raise ApiError(409, "replayed", f"this signed delivery to hook {name!r} was already received")
    run_id, created = started
    if created:
        prepared.started()
    return Accepted(run_id=run_id, created=created, status_url=status_url(request, run_id))


def _record(conn: Conn, hook: HookConfig, signature: str, prepared: PreparedRun) -> tuple[str, bool] | None:
    """The run (id, created), or None for a replay; writes nothing for a replay."""
    if is_replay(conn, hook.name, signature):
        return None
    run_id, created = prepared.insert(conn)
    if not created and not prepared.same_as(get_run(conn, run_id)):
        raise _Conflict(run_id)  # the delivery id names another body: record nothing
    if not record_delivery(
        conn,
        hook=hook.name,
        signature=signature,
        run_id=run_id,
        tolerance=hook.tolerance,
        callback_url=hook.callback_url if created else None,
    ):
        raise _Replay  # a copy raced this one in and won: roll the run back with this transaction
    return run_id, created


class _Replay(Exception):
    pass


class _Conflict(Exception):
    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _parse(body: bytes) -> Any:
    """The body as JSON; 400 for anything crewline cannot read or store as JSON.

    A body nested past the depth limit is refused with 400 like malformed JSON rather than 422: it is
    refused at reading, before the workflow's input model sees it, and a sender must fix its encoding,
    not the values (422 stays for bodies that read fine but do not fit the workflow's input).
    """
    if not body.strip():
        return None
    try:
        return parse_json(body, "webhook body")
    except InvalidInput as e:
        raise ApiError(400, "malformed_json", str(e)) from None
