"""The SMTP connector: ``[connectors.outbox] type = "smtp"``, email out with ``aiosmtplib``.

``send`` is irreversible. SMTP has no idempotency key, so the Message-ID plays that part: it is derived
from the step's idempotency key (recorded in the step's intent before anything goes out), so the same
step always builds the same Message-ID, a replay returns the recorded result without sending, and the
question "did it go out?" after a crash has an answer the system of record can give: with ``sent =
"mail"`` naming an IMAP connector, a sent email is also appended to ``sent_mailbox`` as mail clients do
(Gmail files it there itself), and :meth:`SmtpConnector.was_sent` looks its Message-ID up there.

A reply (``reply_to`` a :class:`~crewline.connectors.records.Message`) gets the threading headers
(``In-Reply-To``, ``References``) and a ``Re:`` subject. A header value holding a line break is refused
before anything is sent (header injection), and so is an address the parser does not read as one address.
"""

from __future__ import annotations

import email.utils
import hashlib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
import pydantic

from ..errors import ConnectorAuthError, ConnectorError, ConnectorRejected, ConnectorUnavailable, InvalidInput
from ..secret_store import Credentials
from .base import (
    Connector,
    ConnectorSettings,
    ConnectorSetup,
    ConnectorType,
    CredentialRef,
    Found,
    OperationSpec,
)
from .email_message import check_header
from .imap import ImapConnector, tls_problem
from .records import Message

__all__ = ["CONNECTOR", "SEND", "SendEmail", "Sent", "SmtpConnector", "SmtpSettings", "reply_headers"]


class SmtpSettings(ConnectorSettings):
    type: Literal["smtp"]
    host: str
    port: int | None = None  # 465 with tls = "tls", 587 with "starttls", 25 with "none"
    tls: Literal["tls", "starttls", "none"] = "starttls"
    user: str | None = None
    password: CredentialRef | None = None
    from_address: str  # "Ada <ada@example.com>"
    sent: str | None = None  # an IMAP connector to file sent mail with (and to ask after a crash)
    sent_mailbox: str = "Sent"
    timeout: float = pydantic.Field(default=30.0, gt=0)
    ca_file: str | None = (
        None  # trust only this CA (PEM) instead of the system's, e.g. a self-hosted server's
    )

    @property
    def effective_port(self) -> int:
        return self.port or {"tls": 465, "starttls": 587, "none": 25}[self.tls]


class SendEmail(pydantic.BaseModel):
    """What ``send`` takes: recipients, subject, text, and optionally the message replied to."""

    model_config = pydantic.ConfigDict(frozen=True)

    to: list[str] = pydantic.Field(min_length=1)
    subject: str = ""
    text: str
    cc: list[str] = pydantic.Field(default_factory=list)
    reply_to: Message | None = None


class Sent(pydantic.BaseModel):
    """What ``send`` returns: the Message-ID it went out with, and where a copy was filed."""

    message_id: str
    to: list[str]
    filed_in: str | None = None


SEND = OperationSpec(
    "send",
    "irreversible",
    SendEmail,
    Sent,
    "Send an email (a reply when reply_to is given). It cannot be unsent.",
)


def reply_headers(original: Message) -> dict[str, str]:
    """``In-Reply-To`` and ``References`` of a reply to ``original`` (RFC 5322 section 3.6.4)."""
    if not original.message_id:
        return {}
    references = [*original.references, original.message_id]
    return {"In-Reply-To": original.message_id, "References": " ".join(references)}


def _reply_subject(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def _address(value: str, where: str) -> str:
    check_header(where, value)
    name, addr = email.utils.parseaddr(value)
    if "@" not in addr or len(email.utils.getaddresses([value])) != 1:
        raise InvalidInput(f"{where} {value!r} is not one email address")
    return email.utils.formataddr((name, addr)) if name else addr


class SmtpConnector:
    def __init__(self, setup: ConnectorSetup) -> None:
        assert isinstance(setup.settings, SmtpSettings)
        self.name = setup.name
        self.settings: SmtpSettings = setup.settings
        self._credentials: Credentials = setup.credentials
        self._sibling = setup.sibling

    def operations(self) -> Mapping[str, OperationSpec]:
        return {SEND.name: SEND}

    def message_id(self, idempotency_key: str) -> str:
        """The Message-ID the step with ``idempotency_key`` sends: the same on every attempt."""
        digest = hashlib.sha256(f"{self.name}:{idempotency_key}".encode()).hexdigest()[:32]
        domain = email.utils.parseaddr(self.settings.from_address)[1].rpartition("@")[2] or "crewline"
        return f"<{digest}@{domain}>"

    def compose(self, send: SendEmail, idempotency_key: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = _address(self.settings.from_address, f"[connectors.{self.name}] from_address")
        msg["To"] = ", ".join(_address(a, "to") for a in send.to)
        if send.cc:
            msg["Cc"] = ", ".join(_address(a, "cc") for a in send.cc)
        subject = send.subject or (send.reply_to.subject if send.reply_to else "")
        if send.reply_to is not None:
            subject = _reply_subject(subject)
            for name, value in reply_headers(send.reply_to).items():
                msg[name] = check_header(name, value)
        msg["Subject"] = check_header("Subject", subject)
        msg["Message-ID"] = self.message_id(idempotency_key)
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg.set_content(send.text)
        return msg

    async def invoke(self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str) -> Any:
        assert isinstance(arguments, SendEmail)
        msg = self.compose(arguments, idempotency_key)
        await self._send(msg)
        filed = await self._file(msg)
        return Sent(message_id=str(msg["Message-ID"]), to=arguments.to, filed_in=filed)

    async def _send(self, msg: EmailMessage) -> None:
        s = self.settings
        password = None
        if s.password is not None:
            password = (
                await self._credentials.resolve(s.password, f"[connectors.{self.name}] password")
            ).reveal()
        where = f"{s.host}:{s.effective_port}"
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.host,
                port=s.effective_port,
                username=s.user,
                password=password,
                use_tls=s.tls == "tls",
                start_tls=s.tls == "starttls",
                tls_context=ssl.create_default_context(cafile=s.ca_file) if s.tls != "none" else None,
                timeout=s.timeout,
            )
        except ssl.SSLError as e:
            raise ConnectorError(self.name, tls_problem(f"connecting to {where}", e)) from e
        except aiosmtplib.SMTPAuthenticationError:
            raise ConnectorAuthError(
                self.name, f"{where} refused the login of {s.user!r}: check the user and password"
            ) from None
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused) as e:
            raise ConnectorRejected(self.name, f"{where} refused the email: {_reason(e)}") from e
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
        ) as e:
            raise ConnectorUnavailable(
                self.name, f"cannot reach {where} ({type(e).__name__}): check host, port and tls"
            ) from e
        except aiosmtplib.SMTPException as e:
            raise ConnectorRejected(self.name, f"{where} refused the email: {_reason(e)}") from e

    def _imap(self) -> ImapConnector | None:
        if self.settings.sent is None or self._sibling is None:
            return None
        found: Connector = self._sibling(self.settings.sent)
        if not isinstance(found, ImapConnector):
            raise ConnectorError(
                self.name, f'sent = {self.settings.sent!r} must name a type = "imap" connector'
            )
        return found

    async def _file(self, msg: EmailMessage) -> str | None:
        imap = self._imap()
        if imap is None:
            return None
        await imap.save(self.settings.sent_mailbox, bytes(msg), str(msg["Message-ID"]))
        return self.settings.sent_mailbox

    async def was_sent(self, idempotency_key: str) -> bool | None:
        """Whether the email of the step with ``idempotency_key`` is in the Sent mailbox; None when no
        IMAP connector is configured to ask (the outcome stays unknown)."""
        imap = self._imap()
        if imap is None:
            return None
        return await imap.holds(self.settings.sent_mailbox, self.message_id(idempotency_key))

    async def was_done(
        self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str
    ) -> Found:
        """The reconcile check of ``send`` (see :class:`~crewline.connectors.base.Reconciling`): found in
        Sent, it went out; not found, it is sent again under the same Message-ID. An email the server took
        but the worker died before filing is the one case this misses, unless the server files sent mail
        itself, as Gmail does."""
        sent = None if spec.name != SEND.name else await self.was_sent(idempotency_key)
        if sent is None:
            return Found(None)
        if not sent:
            return Found(False)
        assert isinstance(arguments, SendEmail)
        output = Sent(
            message_id=self.message_id(idempotency_key), to=arguments.to, filed_in=self.settings.sent_mailbox
        )
        return Found(True, output)

    async def aclose(self) -> None:
        return None


def _reason(error: aiosmtplib.SMTPException) -> str:
    return str(getattr(error, "message", "") or error)[:200]


def _problems(name: str, settings: ConnectorSettings, credentials: Credentials) -> list[str]:
    assert isinstance(settings, SmtpSettings)
    problems: list[str] = []
    if settings.password is not None:
        problems += credentials.problems(settings.password, f"[connectors.{name}] password")
    if (settings.user is None) != (settings.password is None):
        problems.append(f"[connectors.{name}] user and password go together: give both or neither")
    try:
        _address(settings.from_address, f"[connectors.{name}] from_address")
    except InvalidInput as e:
        problems.append(str(e))
    return problems


CONNECTOR = ConnectorType(settings=SmtpSettings, build=SmtpConnector, problems=_problems)
