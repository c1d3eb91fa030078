"""Where alert notices go: a Slack incoming webhook, email over SMTP, or an HMAC-signed webhook.

A channel type is one small async sender in :data:`SENDERS`. A sender raises :class:`ChannelError` with
a message fit for the log and the database: it names what failed (an HTTP status, the SMTP error class)
but never the URL or a password, since a Slack webhook URL is itself a secret. Signed webhooks are signed
exactly like crewline's webhook completion callbacks (:mod:`crewline.signing`).
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING

from ..errors import ChannelError
from ..signing import signed_headers
from ..store.payloads import dump
from .alert_config import ChannelConfig

if TYPE_CHECKING:
    import httpx

__all__ = ["SENDERS", "Notice", "send"]

SMTP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Notice:
    """One message about an alert episode: what happened, with the numbers, and where to look."""

    rule: str
    state: str  # firing | resolved | test
    summary: str
    at: float
    value: float | None = None
    threshold: float | None = None
    link: str | None = None

    @property
    def title(self) -> str:
        marks = {"firing": "FIRING", "resolved": "resolved", "test": "test"}
        return f"[crewline] {marks.get(self.state, self.state)}: {self.rule}"

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.summary}" + (f"\nSee {self.link}" if self.link else "")


Sender = Callable[[ChannelConfig, Notice, "httpx.AsyncClient"], Awaitable[None]]


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
    import httpx  # loaded with the first notice, not with crewline

    try:
        response = await client.post(
            url, content=body, headers={"Content-Type": "application/json", **headers}
        )
    except httpx.HTTPError as e:  # str(e) would carry the URL
        raise ChannelError(f"could not reach the endpoint ({type(e).__name__})") from None
    if not response.is_success:
        raise ChannelError(f"the endpoint answered HTTP {response.status_code}")


async def _slack(channel: ChannelConfig, notice: Notice, client: httpx.AsyncClient) -> None:
    assert channel.url is not None
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notice.summary[:2900]}},
    ]
    if notice.link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{notice.link}>"}]})
    await _post(client, channel.url, dump({"text": notice.text, "blocks": blocks}), {})


async def _webhook(channel: ChannelConfig, notice: Notice, client: httpx.AsyncClient) -> None:
    assert channel.url is not None and channel.secret is not None
    body = dump(asdict(notice))
    await _post(client, channel.url, body, signed_headers(channel.secret, body))


def _smtp_send(channel: ChannelConfig, notice: Notice) -> None:
    message = EmailMessage()
    message["Subject"] = notice.title
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message.set_content(notice.text)
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=SMTP_TIMEOUT) as smtp:
            if channel.starttls:
                smtp.starttls()
            if channel.password is not None:
                smtp.login(channel.username or channel.sender, channel.password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as e:
        code = getattr(e, "smtp_code", None)
        raise ChannelError(
            f"SMTP {channel.host}:{channel.port} failed ({type(e).__name__}{f' {code}' if code else ''})"
        ) from None


async def _email(channel: ChannelConfig, notice: Notice, client: httpx.AsyncClient) -> None:
    await asyncio.to_thread(_smtp_send, channel, notice)


SENDERS: dict[str, Sender] = {"slack": _slack, "webhook": _webhook, "email": _email}


async def send(channel: ChannelConfig, notice: Notice, client: httpx.AsyncClient) -> None:
    """Deliver ``notice`` through ``channel``; raises :class:`ChannelError`."""
    await SENDERS[channel.type](channel, notice, client)
