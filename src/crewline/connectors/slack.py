"""The Slack connector: Slack's Web API with a bot token, and the check of Slack's signed callbacks.

``[connectors.NAME] type = "slack"`` takes ``bot_token`` (a credential reference: ``secret:NAME`` or
``env:NAME``), ``signing_secret`` (the same, for interaction callbacks), ``channel`` (where messages go
when no channel is named), ``reviews_channel`` and ``reviewers`` (used by the Slack review requests),
and ``base_url`` (only to point it at a fake in tests).

Every call is ``POST <base_url>/<method>`` with a JSON body and ``Authorization: Bearer``. Slack answers
HTTP 200 even for a refused call (``{"ok": false, "error": "invalid_auth"}``), so errors are read from
the body and mapped here, once, onto the connector errors: a bad token names the connector and the
setting to check, never the token. A 429 is waited out as its ``Retry-After`` says, a few times, then
raised as :class:`~crewline.errors.ConnectorRateLimited` for the caller's retry policy.

Slack has no idempotency key for ``chat.postMessage``. A post from a workflow is therefore a durable
step whose recorded output is the message's ``ts``, so a replay never posts again; the idempotency key
travels as message metadata, and :meth:`SlackConnector.find_posted` answers whether a post whose outcome
is unknown after a crash reached the channel (reconciliation), instead of posting twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorRejected,
    ConnectorTimeout,
    ConnectorUnavailable,
)
from ..secret_store import Credentials, SecretValue
from ..signing import SignatureError
from .base import ConnectorSettings, ConnectorSetup, ConnectorType, CredentialRef, OperationSpec

# httpx is imported where a request is made: an app that configures no Slack connector never loads it.
if TYPE_CHECKING:
    import httpx

__all__ = [
    "CONNECTOR",
    "OPERATIONS",
    "SIGNATURE_TOLERANCE",
    "PostMessage",
    "PostedMessage",
    "SlackConnector",
    "SlackSettings",
    "UpdateMessage",
    "verify_slack_signature",
]

SIGNATURE_TOLERANCE = 300.0
"""Slack's own advice: refuse callbacks whose timestamp is more than five minutes from now."""

METADATA_EVENT = "crewline_post"
MAX_RETRY_WAIT = 30.0

_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission"}
)
_HINTS = {
    "channel_not_found": "check the channel name or id, and that the bot can see it",
    "not_in_channel": "invite the bot to the channel (/invite @yourbot)",
    "is_archived": "the channel is archived: unarchive it or choose another",
    "missing_scope": "add the chat:write scope to the Slack app and reinstall it",
    "message_not_found": "the message to update no longer exists",
    "msg_too_long": "shorten the message",
    "invalid_blocks": "the message's blocks are not valid Block Kit",
}


class SlackSettings(ConnectorSettings):
    """``[connectors.NAME] type = "slack"``."""

    type: Literal["slack"] = "slack"
    bot_token: CredentialRef = Field(description="secret:NAME or env:NAME holding the bot token (xoxb-...)")
    signing_secret: CredentialRef | None = Field(
        default=None, description="secret:NAME or env:NAME holding the app's signing secret"
    )
    channel: str | None = Field(default=None, description="where messages go when no channel is named")
    reviews_channel: str | None = Field(
        default=None, description="where review requests are posted with Approve / Reject buttons"
    )
    reviewers: tuple[str, ...] = Field(
        default=(), description="Slack user ids who may decide reviews; empty: anyone who sees the message"
    )
    base_url: str = Field(default="https://slack.com/api", pattern=r"^https?://[^\s]+$")
    timeout: float = Field(default=10.0, gt=0, le=300)
    max_retries: int = Field(default=3, ge=0, le=10)


class PostedMessage(BaseModel):
    """A message Slack accepted: the channel id and ``ts`` that name it from now on."""

    channel: str
    ts: str


class PostMessage(BaseModel):
    """Arguments of ``post_message``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=40_000, description="the message (the fallback with blocks)")
    channel: str | None = Field(default=None, description="channel name or id; default: the connector's")
    blocks: list[dict[str, Any]] | None = Field(default=None, max_length=50, description="Block Kit blocks")


class UpdateMessage(BaseModel):
    """Arguments of ``update_message``."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="the channel id post_message returned")
    ts: str = Field(description="the ts post_message returned")
    text: str = Field(min_length=1, max_length=40_000)
    blocks: list[dict[str, Any]] | None = Field(default=None, max_length=50)


OPERATIONS: dict[str, OperationSpec] = {
    "post_message": OperationSpec(
        "post_message",
        "irreversible",
        PostMessage,
        PostedMessage,
        "Post a message to a Slack channel; returns its channel id and ts.",
    ),
    "update_message": OperationSpec(
        "update_message",
        "idempotent",
        UpdateMessage,
        PostedMessage,
        "Replace the text and blocks of a message posted before.",
    ),
}


class SlackConnector:
    """Slack's Web API for one bot token. The token is resolved on each call (a rotated secret is used at
    once) and only goes into the Authorization header of requests to ``base_url``."""

    def __init__(self, setup: ConnectorSetup, *, client: httpx.AsyncClient | None = None) -> None:
        assert isinstance(setup.settings, SlackSettings)
        self._name = setup.name
        self.settings: SlackSettings = setup.settings
        self._credentials = setup.credentials
        import httpx

        self._client = client or httpx.AsyncClient(timeout=self.settings.timeout, follow_redirects=False)
        self._owns_client = client is None

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"SlackConnector({self.name!r})"

    def operations(self) -> Mapping[str, OperationSpec]:
        return OPERATIONS

    async def invoke(self, spec: OperationSpec, arguments: BaseModel, idempotency_key: str) -> Any:
        if isinstance(arguments, PostMessage):
            posted = await self.post_message(
                arguments.text, channel=arguments.channel, blocks=arguments.blocks, key=idempotency_key
            )
        elif isinstance(arguments, UpdateMessage):
            posted = await self.update_message(
                arguments.channel, arguments.ts, arguments.text, blocks=arguments.blocks
            )
        else:
            raise ConnectorRejected(self.name, f"Slack has no operation {spec.name!r}")
        return posted.model_dump()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def signing_secret(self) -> SecretValue:
        """The app's signing secret, to check Slack's callbacks; a ConfigError when none is configured."""
        if self.settings.signing_secret is None:
            raise ConfigError(
                f"[connectors.{self.name}] has no signing_secret: set it to check Slack's interaction callbacks"
            )
        return await self._credentials.resolve(
            self.settings.signing_secret, f"[connectors.{self.name}] signing_secret"
        )

    async def post_message(
        self,
        text: str,
        *,
        channel: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
        key: str | None = None,
    ) -> PostedMessage:
        """Post to ``channel`` (or the connector's default); ``key`` is kept as message metadata so
        :meth:`find_posted` can tell later whether this post arrived."""
        args: dict[str, Any] = {"channel": self._channel(channel), "text": text}
        if blocks:
            args["blocks"] = blocks
        if key is not None:
            args["metadata"] = {"event_type": METADATA_EVENT, "event_payload": {"key": key}}
        answer = await self.call("chat.postMessage", args)
        return PostedMessage(channel=str(answer["channel"]), ts=str(answer["ts"]))

    async def update_message(
        self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None
    ) -> PostedMessage:
        """Replace the text (and blocks, when given; ``[]`` removes them) of a message the bot posted."""
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        answer = await self.call("chat.update", args)
        return PostedMessage(channel=str(answer["channel"]), ts=str(answer["ts"]))

    async def find_posted(
        self, key: str, *, channel: str | None = None, since: float = 0.0
    ) -> PostedMessage | None:
        """The message posted with idempotency ``key`` in ``channel`` since ``since`` (Unix seconds), if any."""
        where = self._channel(channel)
        args = {"channel": where, "oldest": f"{since:.6f}", "include_all_metadata": True, "limit": 200}
        answer = await self.call("conversations.history", args)
        for message in answer.get("messages") or ():
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key:
                return PostedMessage(channel=str(answer.get("channel", where)), ts=str(message["ts"]))
        return None

    async def respond(self, response_url: str, text: str) -> None:
        """Tell the user who clicked, and only them, ``text`` (an ephemeral reply to an interaction).

        ``response_url`` comes from a signed callback; it is still only followed to Slack's own hooks
        host or to ``base_url``'s host, so a callback cannot make crewline post anywhere else."""
        if not _same_origin(response_url, "https://hooks.slack.com/") and not _same_origin(
            response_url, self.settings.base_url
        ):
            raise ConnectorRejected(self.name, "the interaction's response_url is not Slack's")
        body = {"response_type": "ephemeral", "replace_original": False, "text": text}
        import httpx

        try:
            response = await self._client.post(response_url, json=body)
        except httpx.HTTPError as e:
            raise ConnectorUnavailable(self.name, f"could not reach Slack ({type(e).__name__})") from None
        if not response.is_success:
            raise ConnectorUnavailable(self.name, f"Slack answered HTTP {response.status_code} to a reply")

    async def call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """One Web API call, waiting out rate limits up to ``max_retries`` times; the parsed answer."""
        for attempt in range(self.settings.max_retries + 1):
            try:
                return await self._call_once(method, args)
            except ConnectorRateLimited as e:
                if attempt == self.settings.max_retries:
                    raise
                await asyncio.sleep(min(MAX_RETRY_WAIT, 1.0 if e.retry_after is None else e.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.settings.base_url.rstrip('/')}/{method}"
        token = await self._credentials.resolve(
            self.settings.bot_token, f"[connectors.{self.name}] bot_token"
        )
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        import httpx

        try:
            response = await self._client.post(url, json=args, headers=headers)
        except httpx.TimeoutException:
            raise ConnectorTimeout(self.name, f"Slack did not answer {method} in time") from None
        except httpx.HTTPError as e:  # str(e) may carry the URL; the type is enough
            raise ConnectorUnavailable(self.name, f"could not reach Slack ({type(e).__name__})") from None
        return self._read(method, response)

    def _read(self, method: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("retry-after"))
            raise ConnectorRateLimited(self.name, f"Slack rate-limited {method}", retry_after=retry_after)
        if response.status_code >= 500:
            raise ConnectorUnavailable(
                self.name,
                f"Slack answered HTTP {response.status_code} to {method}",
                status=response.status_code,
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ConnectorUnavailable(
                self.name, f"Slack answered {method} with HTTP {response.status_code} and no JSON object"
            )
        if answer.get("ok") is True:
            return answer
        raise self._refused(method, str(answer.get("error") or "unknown_error"), response.status_code)

    def _refused(self, method: str, error: str, status: int) -> ConnectorError:
        if error in _AUTH_ERRORS:
            return ConnectorAuthError(
                self.name,
                f"Slack refused the bot token ({error}): check bot_token of [connectors.{self.name}] and "
                "that the app is installed in the workspace",
                status=status,
            )
        hint = _HINTS.get(error, "see Slack's documentation of the method")
        return ConnectorRejected(self.name, f"Slack refused {method} ({error}): {hint}", status=status)

    def _channel(self, channel: str | None) -> str:
        where = channel or self.settings.channel
        if not where:
            raise ConnectorRejected(
                self.name, f"no channel given and [connectors.{self.name}] sets no default channel"
            )
        return where


def _same_origin(url: str, other: str) -> bool:
    import httpx

    a, b = httpx.URL(url), httpx.URL(other)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def verify_slack_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> str:
    """Check a request Slack signed (v0); returns the signature, raises :class:`SignatureError` saying why.

    The comparison is constant-time; a timestamp more than ``tolerance`` seconds from now is refused
    before the body is looked at, so an old captured request cannot be replayed later.
    """
    if not timestamp or not signature:
        missing = "X-Slack-Request-Timestamp" if not timestamp else "X-Slack-Signature"
        raise SignatureError(f"missing {missing} header: is this request from Slack?")
    try:
        sent = int(timestamp.strip())
    except ValueError:
        raise SignatureError("X-Slack-Request-Timestamp must be Unix seconds, an integer") from None
    skew = (time.time() if now is None else now) - sent
    if abs(skew) > tolerance:
        raise SignatureError(
            f"X-Slack-Request-Timestamp is {abs(skew):.0f}s {'old' if skew > 0 else 'in the future'}, "
            f"outside the {tolerance:.0f}s Slack allows (a replayed request, or a clock to fix)"
        )
    signed = f"v0:{timestamp.strip()}:".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.strip().encode(), f"v0={digest}".encode()):
        raise SignatureError("X-Slack-Signature does not match: check the app's signing_secret")
    return signature.strip()


def _problems(name: str, settings: ConnectorSettings, credentials: Credentials) -> list[str]:
    assert isinstance(settings, SlackSettings)
    problems = credentials.problems(settings.bot_token, f"[connectors.{name}] bot_token")
    if settings.signing_secret is not None:
        problems += credentials.problems(settings.signing_secret, f"[connectors.{name}] signing_secret")
    return problems


CONNECTOR = ConnectorType(settings=SlackSettings, build=SlackConnector, problems=_problems)
