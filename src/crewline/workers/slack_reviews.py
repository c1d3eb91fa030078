"""Review requests in Slack: each pending approval posted once with Approve / Reject buttons, and its
message kept in step with the decision, wherever the decision was made.

``[review] slack = "NAME"`` names a Slack connector; requests go to its ``reviews_channel`` (else its
``channel``). Every worker runs :meth:`SlackReviews.run` as a chore; what makes a post happen once is the
outbox (:mod:`.slack_outbox`): each tick queues the pending approvals it has not seen, claims due rows
under a lease and posts them. A post carries the review id as its idempotency key (message metadata),
so a row claimed again after a crash first asks the channel whether its message arrived. A review
decided elsewhere (API, CLI, an expiry) has its message rewritten to show the decision, buttons gone;
one decided from Slack is rewritten by the callback (``server/routes/slack.py``) at once.

A button's value holds the review id and the hash of what the message showed, so a click on a request
that changed since it was posted is refused rather than approving something nobody saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..connectors.registry import Connectors
from ..connectors.slack import SlackConnector
from ..errors import ConfigError, ConnectorError, ConnectorRateLimited, DatabaseUnavailable, ReviewNotFound
from ..flows.review_requests import ReviewRequest, get_request, list_requests
from ..store.database import Database
from . import slack_outbox as outbox

__all__ = [
    "APPROVE",
    "REJECT",
    "ButtonValue",
    "SlackReviews",
    "decided_message",
    "request_message",
    "reviews_connector",
    "slack_problems",
    "slack_reviews_for",
]

log = logging.getLogger("crewline.slack_reviews")

APPROVE = "crewline_approve"
REJECT = "crewline_reject"
_KINDS = ("approval", "budget")  # the requests a button can decide
_PREVIEW_CHARS = 2800  # a section's text holds 3000
_MARKS = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired", "closed": "Closed"}


def reviews_connector(review: Mapping[str, Any] | None) -> str | None:
    """The connector ``[review] slack`` names, or None; a ConfigError for anything but a name."""
    name = (review or {}).get("slack")
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(
            '[review] slack must name a Slack connector, e.g. slack = "slack" for [connectors.slack]'
        )
    return name.strip()


def slack_problems(review: Mapping[str, Any], connectors: Any) -> list[str]:
    """What is wrong with ``[review] slack`` given ``[connectors]`` (for ``crewline config check``)."""
    try:
        name = reviews_connector(review)
    except ConfigError as e:
        return [str(e)]
    if name is None:
        return []
    table = connectors.get(name) if isinstance(connectors, Mapping) else None
    if not isinstance(table, Mapping) or table.get("type") != "slack":
        return [f'[review] slack = "{name}" needs a [connectors.{name}] with type = "slack"']
    problems = []
    if not table.get("reviews_channel") and not table.get("channel"):
        problems.append(f"[connectors.{name}] needs reviews_channel (or channel): where review requests go")
    if not table.get("signing_secret"):
        problems.append(
            f"[connectors.{name}] needs signing_secret to check the Approve / Reject callbacks "
            "(the app's Signing Secret, as secret:NAME or env:NAME)"
        )
    return problems


def slack_reviews_for(
    review: Mapping[str, Any] | None, connectors: Connectors, db: Database, interval: float = 1.0
) -> SlackReviews | None:
    """The poster ``[review] slack`` asks for, or None; a ConfigError when it names no Slack connector."""
    name = reviews_connector(review)
    if name is None:
        return None
    connector = connectors.get(name)
    if not isinstance(connector, SlackConnector):
        raise ConfigError(f'[review] slack names [connectors.{name}], which is not type = "slack"')
    return SlackReviews(db, connector, interval=interval)


@dataclass(frozen=True)
class ButtonValue:
    """What a button carries: the review and the hash of what its message showed."""

    review_id: str
    seen_hash: str

    def dump(self) -> str:
        return json.dumps({"review": self.review_id, "seen": self.seen_hash}, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: object) -> ButtonValue | None:
        try:
            data = json.loads(str(raw))
            return cls(str(data["review"]), str(data["seen"]))
        except (ValueError, KeyError, TypeError):
            return None


def _escape(text: str) -> str:
    """Slack's mrkdwn reserves &, < and >: escaped, a preview cannot mention @channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _preview_text(preview: Any) -> str:
    text = preview if isinstance(preview, str) else json.dumps(preview, indent=2, default=str)
    if len(text) > _PREVIEW_CHARS:
        text = text[:_PREVIEW_CHARS] + "\n… (shortened: see the full request in crewline)"
    return "```" + _escape(text.replace("```", "'''")) + "```"


def _summary_blocks(req: ReviewRequest) -> list[dict[str, Any]]:
    cost = req.context.get("cost_usd") if isinstance(req.context, dict) else None
    facts = [f"*Risk:* {req.risk}", f"*Run:* `{_escape(req.run_id)}`"]
    if isinstance(cost, int | float):
        facts.append(f"*Cost so far:* ${cost:.4f}")
    return [
        {"type": "header", "text": {"type": "plain_text", "text": f"Review: {req.action}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "   ".join(facts)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _preview_text(req.preview)}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"review `{_escape(req.id)}`"}],
        },
    ]


def request_message(req: ReviewRequest) -> tuple[str, list[dict[str, Any]]]:
    """The text and Block Kit blocks of a pending request, with its Approve and Reject buttons."""
    value = ButtonValue(req.id, req.content_hash).dump()
    buttons = {
        "type": "actions",
        "block_id": "crewline_review",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": value,
            },
            {
                "type": "button",
                "action_id": REJECT,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": value,
            },
        ],
    }
    text = f"Review requested: {req.action} (risk {req.risk}), review {req.id}"
    return text, [*_summary_blocks(req), buttons]


def decided_message(req: ReviewRequest, note: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The message once ``req`` is decided: the decision, who made it, and ``note`` (e.g. a refused click)."""
    mark = _MARKS.get(req.status, req.status)
    who = f" by {_escape(req.decided_by)}" if req.decided_by else ""
    line = f"*{mark}*{who}" + (f": {_escape(req.comment)}" if req.comment else "")
    if note:
        line += f"\n_{_escape(note)}_"
    text = f"{mark}{who}: {req.action}, review {req.id}"
    return text, [*_summary_blocks(req), {"type": "section", "text": {"type": "mrkdwn", "text": line}}]


class SlackReviews:
    """Posts pending approvals to Slack through ``slack`` and closes their messages once decided."""

    def __init__(
        self, db: Database, slack: SlackConnector, *, interval: float = 1.0, lease: float = outbox.LEASE
    ) -> None:
        channel = slack.settings.reviews_channel or slack.settings.channel
        if not channel:
            raise ConfigError(
                f"[review] slack names connector {slack.name!r}, which has no channel: set reviews_channel "
                f"(or channel) in [connectors.{slack.name}]"
            )
        self.db = db
        self.slack = slack
        self.channel = channel
        self.interval = interval
        self.lease = lease

    async def run(self, stopping: asyncio.Event) -> None:
        """A worker chore: tick until ``stopping`` is set; a failed tick is logged and tried again."""
        while not stopping.is_set():
            try:
                await self.tick()
            except DatabaseUnavailable as e:
                log.warning("slack reviews: cannot reach the database: %s", e)
            except Exception:
                log.exception("slack reviews: tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def tick(self) -> int:
        """Queue new requests, post what is due, close what was decided; returns how many were posted."""
        pending = await self.db.read(lambda conn: list_requests(conn, status="pending", limit=500))
        await self._queue([r.id for r in pending if r.kind in _KINDS])
        due = await self.db.write(lambda conn: outbox.claim_due(conn, lease=self.lease))
        posted = sum(await asyncio.gather(*(self._post(p) for p in due)))
        await self._close_decided({r.id for r in pending})
        return posted

    async def _queue(self, review_ids: list[str]) -> None:
        def write(conn: Any) -> None:
            new = [r for r in review_ids if r not in outbox.known_reviews(conn, review_ids)]
            outbox.queue_posts(conn, new, self.slack.name)

        if review_ids:
            await self.db.write(write)

    async def _post(self, post: outbox.Post) -> bool:
        try:
            req = await self.db.read(lambda conn: get_request(conn, post.review_id))
        except ReviewNotFound:
            req = None
        if req is None or req.status != "pending":
            await self.db.write(lambda conn: outbox.close_post(conn, post.review_id))
            return False
        try:
            found = None
            if post.attempts > 0:  # claimed before: the message may be in the channel already
                found = await self.slack.find_posted(req.id, channel=self.channel, since=post.created_at - 60)
            if found is None:
                text, blocks = request_message(req)
                found = await self.slack.post_message(text, channel=self.channel, blocks=blocks, key=req.id)
        except ConnectorError as e:
            retry_after = e.retry_after if isinstance(e, ConnectorRateLimited) else None
            error = str(e)
            state = await self.db.write(lambda conn: outbox.record_failure(conn, post, error, retry_after))
            log.warning("slack reviews: could not post review %s (%s); now %s", req.id, e, state)
            return False
        await self.db.write(lambda conn: outbox.record_posted(conn, req.id, found.channel, found.ts))
        return True

    async def _close_decided(self, pending: set[str]) -> None:
        open_posts = await self.db.read(outbox.open_posts)
        for post in open_posts:
            if post.review_id not in pending:
                await self.show_decision(post.review_id)

    async def show_decision(self, review_id: str, note: str | None = None) -> None:
        """Rewrite the review's message to show its decision (if it was posted); a failure is logged and
        left for the next tick (the row stays open)."""
        post = await self.db.read(lambda conn: outbox.find_post(conn, review_id))
        if post is None or post.channel is None or post.ts is None:
            return
        req = await self.db.read(lambda conn: get_request(conn, review_id))
        if req.status == "pending":
            return
        text, blocks = decided_message(req, note)
        try:
            await self.slack.update_message(post.channel, post.ts, text, blocks=blocks)
        except ConnectorError as e:
            log.warning("slack reviews: could not update the message of review %s: %s", review_id, e)
            return
        await self.db.write(lambda conn: outbox.close_post(conn, review_id))
