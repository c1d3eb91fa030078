"""``POST /hooks/slack/interactions``: Slack's interaction callback, deciding reviews from their buttons.

The request is authenticated by Slack's signature, not by an API key (:data:`~..keys.ACTIONS` names it
"decide reviews from Slack", a ``signature:`` permission no key holds): the raw body is checked against
the signing secret of the connector ``[review] slack`` names, in constant time, and a timestamp more than
five minutes off is refused. A signature that passes is remembered as webhook deliveries are
(:mod:`..deliveries`), so the same signed request sent again decides nothing (409). Then the clicking
Slack user, when ``reviewers`` allows them, decides the review through the review queue, as the API does,
recorded as ``<name> (Slack <user id>)``, and the message is rewritten to show the decision. A click on a
review decided meanwhile decides nothing: the message shows (or soon shows) that decision, and the one
who clicked is told privately, through the callback's ``response_url``, who decided it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from ...connectors.slack import SIGNATURE_TOLERANCE, SlackConnector, verify_slack_signature
from ...errors import (
    ConfigError,
    ConnectorError,
    InvalidInput,
    InvalidRunState,
    ReviewNotFound,
)
from ...signing import SignatureError
from ...store.payloads import parse_json
from ...workers.slack_reviews import APPROVE, REJECT, ButtonValue, SlackReviews, reviews_connector
from ..deliveries import record_delivery
from ..errors import ApiError
from ..keys import ACTIONS, SIGNED_BY
from ..state import ServerState, state_of
from ._body import read_body

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])

ACTION = "decide reviews from Slack"
assert ACTIONS[ACTION].startswith(SIGNED_BY)  # this route checks a signature, never a key
MAX_BODY = 256 * 1024  # Slack's payloads are a few kilobytes
_DELIVERY_HOOK = "slack:interactions"  # the name its signatures are remembered under


@dataclass(frozen=True)
class _Click:
    """One button click from a block_actions payload."""

    decision: str  # approve | reject
    button: ButtonValue
    user_id: str
    user_name: str
    response_url: str | None

    @property
    def who(self) -> str:
        return f"{self.user_name} (Slack {self.user_id})"


@router.post(
    "/hooks/slack/interactions",
    summary="Slack's interaction callback: Approve / Reject buttons of review requests",
    responses={
        200: {"description": "Handled; the Slack message shows the decision."},
        401: {"description": "Missing, stale or wrong Slack signature: nothing was decided."},
        403: {"description": "The Slack user is not among the connector's reviewers."},
        404: {"description": "Slack reviews are not configured, or the review does not exist."},
        409: {"description": "This signed request was already received (a replay)."},
    },
)
async def slack_interaction(
    request: Request,
    x_slack_request_timestamp: str | None = Header(default=None, max_length=40),
    x_slack_signature: str | None = Header(default=None, max_length=200),
) -> Response:
    state = state_of(request)
    slack = _connector(state)
    body = await read_body(request, MAX_BODY)
    try:
        secret = await slack.signing_secret()
        signature = verify_slack_signature(
            secret.reveal(), body, x_slack_request_timestamp, x_slack_signature
        )
    except SignatureError as e:
        raise ApiError(401, "bad_signature", str(e)) from None
    click = _click(body)
    if click is None:
        return Response(status_code=200)  # another kind of interaction: nothing of crewline's
    reviews = SlackReviews(state.app.db, slack)
    run_id = await _run_of(state, click.button.review_id)
    await _remember(state, signature, run_id)
    if slack.settings.reviewers and click.user_id not in slack.settings.reviewers:
        raise ApiError(
            403,
            "not_a_reviewer",
            f"Slack user {click.user_id} may not decide reviews: add the id to reviewers in "
            f"[connectors.{slack.name}]",
        )
    note = await _decide(state, click)
    if note is None:
        await reviews.show_decision(click.button.review_id)
    elif click.response_url:  # the message already shows the decision: tell only the one who clicked
        with contextlib.suppress(ConnectorError):
            await slack.respond(click.response_url, note)
    return Response(status_code=200)


def _connector(state: ServerState) -> SlackConnector:
    try:
        name = reviews_connector(state.app.settings.sections.get("review"))
    except ConfigError as e:
        raise ApiError(404, "slack_not_configured", str(e)) from None
    if name is None:
        raise ApiError(
            404,
            "slack_not_configured",
            'Slack review requests are not configured: set [review] slack = "NAME" of a [connectors.NAME] '
            'with type = "slack"',
        )
    connector = state.app.engine.connectors.get(name)
    if not isinstance(connector, SlackConnector):
        raise ApiError(
            404,
            "slack_not_configured",
            f'[review] slack names [connectors.{name}], which is not type = "slack"',
        )
    return connector


def _click(body: bytes) -> _Click | None:
    """The click in a ``payload=<JSON>`` form body, or None for an interaction that is not ours."""
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    raw = fields.get("payload", [""])[0]
    if not raw:
        raise InvalidInput("a Slack interaction is a form with a payload field holding JSON")
    payload = parse_json(raw, "Slack interaction payload")
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    action: dict[str, Any] = actions[0] if isinstance(actions, list) and actions else {}
    decision = {APPROVE: "approve", REJECT: "reject"}.get(str(action.get("action_id")))
    button = ButtonValue.parse(action.get("value"))
    if decision is None or button is None:
        return None
    user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    assert isinstance(user, dict)
    user_id = str(user.get("id") or "")
    if not user_id:
        raise InvalidInput("the Slack interaction names no user")
    name = str(user.get("username") or user.get("name") or user_id)
    response_url = payload.get("response_url")
    return _Click(decision, button, user_id, name, response_url if isinstance(response_url, str) else None)


async def _run_of(state: ServerState, review_id: str) -> str:
    try:
        return (await state.app.reviews.get(review_id)).run_id
    except ReviewNotFound:
        raise ApiError(
            404, "unknown_review", f"no review request {review_id!r}: it may have been pruned"
        ) from None


async def _remember(state: ServerState, signature: str, run_id: str) -> None:
    """Remember the signature; a second arrival is a replay (409) and decides nothing."""
    remembered = await state.app.db.write(
        lambda conn: record_delivery(
            conn,
            hook=_DELIVERY_HOOK,
            signature=signature,
            run_id=run_id,
            tolerance=SIGNATURE_TOLERANCE,
            callback_url=None,
        )
    )
    if not remembered:
        raise ApiError(409, "replayed", "this signed Slack interaction was already received")


async def _decide(state: ServerState, click: _Click) -> str | None:
    """Decide the review; what to add to the message when it could not be decided (already decided...)."""
    reviews = state.app.reviews
    review_id, seen = click.button.review_id, click.button.seen_hash
    try:
        if click.decision == "approve":
            await reviews.approve(review_id, by=click.who, seen_hash=seen)
        else:
            await reviews.reject(review_id, by=click.who, seen_hash=seen)
    except InvalidRunState as e:
        req = await reviews.get(review_id)
        if req.status == "pending":  # its run ended: nothing to show in the message
            raise ApiError(409, "not_decidable", str(e)) from None
        by = f" by {req.decided_by}" if req.decided_by else ""
        return f"{click.user_name} clicked {click.decision}, but it was already {req.status}{by}"
    except InvalidInput as e:  # the request changed since it was posted
        raise ApiError(409, "review_changed", str(e)) from None
    return None
