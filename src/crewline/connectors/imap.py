"""The IMAP connector: ``[connectors.mail] type = "imap"``, a mailbox read by the inbox trigger.

Built on the standard library's :mod:`imaplib`, run in a thread: it is complete for what crewline needs
(UID SEARCH / FETCH / STORE / MOVE / APPEND), has no dependency to vet, and a blocking socket in a thread
per mailbox is the natural shape for IDLE, which holds one connection open anyway. IDLE itself (RFC
2177, which imaplib lacks before Python 3.14) is written here on imaplib's public ``send`` /
``readline``; a server without it is polled. Every imaplib and socket failure is converted where it
enters into a :class:`~crewline.errors.ConnectorError` naming the connector and what to check; the
password is resolved from its reference when a session logs in and never leaves :meth:`ImapSession.login`.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from ..errors import ConnectorAuthError, ConnectorError, ConnectorRejected, ConnectorUnavailable
from ..secret_store import SecretValue
from .base import ConnectorSettings, ConnectorSetup, ConnectorType, CredentialRef, OperationSpec

__all__ = ["CONNECTOR", "ImapConnector", "ImapSession", "ImapSettings", "Mailbox", "tls_problem"]

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapSettings(ConnectorSettings):
    type: Literal["imap"]
    host: str
    port: int | None = None  # 993 with tls = "tls", else 143
    tls: Literal["tls", "starttls", "none"] = "tls"
    user: str
    password: CredentialRef
    timeout: float = pydantic.Field(default=30.0, gt=0)
    ca_file: str | None = (
        None  # trust only this CA (PEM) instead of the system's, e.g. a self-hosted server's
    )

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)


@dataclass(frozen=True)
class Mailbox:
    """A selected mailbox: its UIDVALIDITY (a new one means every UID was renumbered) and next UID."""

    name: str
    uidvalidity: int


class ImapSession:
    """One logged-in IMAP connection (blocking: call it from a thread). Close it with :meth:`close`."""

    def __init__(self, connector: str, imap: imaplib.IMAP4) -> None:
        self.connector = connector
        self._imap = imap
        self.can_idle = False

    @classmethod
    def open(cls, connector: str, settings: ImapSettings, password: SecretValue) -> ImapSession:
        with _converted(connector, f"connecting to {settings.host}:{settings.effective_port}"):
            imap: imaplib.IMAP4
            if settings.tls == "tls":
                context = ssl.create_default_context(cafile=settings.ca_file)
                port = settings.effective_port
                imap = imaplib.IMAP4_SSL(settings.host, port, ssl_context=context, timeout=settings.timeout)
            else:
                imap = imaplib.IMAP4(settings.host, settings.effective_port, timeout=settings.timeout)
                if settings.tls == "starttls":
                    imap.starttls(ssl.create_default_context(cafile=settings.ca_file))
        session = cls(connector, imap)
        session.login(settings.user, password)
        return session

    def login(self, user: str, password: SecretValue) -> None:
        try:
            self._imap.login(user, password.reveal())
        except imaplib.IMAP4.error:
            self.close()
            raise ConnectorAuthError(
                self.connector, f"the server refused the login of {user!r}: check the user and password"
            ) from None
        with _converted(self.connector, "capabilities"):
            self.can_idle = "IDLE" in self._imap.capabilities

    def select(self, mailbox: str) -> Mailbox:
        with _converted(self.connector, f"selecting {mailbox}"):
            status, _data = self._imap.select(_quoted(mailbox))
            if status != "OK":
                raise ConnectorRejected(
                    self.connector, f"no mailbox {mailbox!r}: check the trigger's mailbox"
                )
            _, code = self._imap.response("UIDVALIDITY")
            found = code[0] if code and code[0] else b"0"
            return Mailbox(mailbox, int(found))

    def uids_after(self, last_uid: int, *, unseen_only: bool = False) -> list[int]:
        """UIDs above ``last_uid`` (``UID n:*`` always answers the highest, so it is filtered)."""
        criteria = [f"UID {last_uid + 1}:*"] + (["UNSEEN"] if unseen_only else [])
        with _converted(self.connector, "searching"):
            _, data = self._imap.uid("SEARCH", *criteria)
        return sorted(u for u in (int(x) for x in (data[0] or b"").split()) if u > last_uid)

    def size(self, uid: int) -> int:
        with _converted(self.connector, "fetching a size"):
            _, data = self._imap.uid("FETCH", str(uid), "(RFC822.SIZE)")
        found = _SIZE.search(data[0] if isinstance(data[0], bytes) else b"") if data else None
        return int(found.group(1)) if found else 0

    def fetch(self, uid: int) -> bytes | None:
        """The whole message, leaving its flags alone (BODY.PEEK); None when it is gone."""
        with _converted(self.connector, "fetching"):
            _, data = self._imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                return bytes(item[1])
        return None

    def mark_seen(self, uid: int) -> None:
        with _converted(self.connector, "marking seen"):
            self._imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Seen)")

    def move(self, uid: int, target: str) -> None:
        with _converted(self.connector, f"moving to {target}"):
            status, detail = self._imap.uid("MOVE", str(uid), _quoted(target))
        if status != "OK":
            raise ConnectorRejected(self.connector, f"cannot move to {target!r}: {_text(detail)}")

    def append(self, mailbox: str, raw: bytes, flags: str = r"(\Seen)") -> None:
        with _converted(self.connector, f"appending to {mailbox}"):
            status, detail = self._imap.append(_quoted(mailbox), flags, None, raw)
        if status != "OK":
            raise ConnectorRejected(self.connector, f"cannot append to {mailbox!r}: {_text(detail)}")

    def find(self, mailbox: str, message_id: str) -> bool:
        """Whether ``mailbox`` holds a message with this Message-ID."""
        self.select(mailbox)
        with _converted(self.connector, f"searching {mailbox}"):
            _, data = self._imap.uid("SEARCH", "HEADER", "Message-ID", _quoted(message_id))
        return bool((data[0] or b"").split())

    def idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the server to announce a change (IDLE); True when it did."""
        imap = self._imap
        with _converted(self.connector, "idling"):
            imap.send(b"CLIDLE IDLE\r\n")
            if not imap.readline().startswith(b"+"):
                raise ConnectorUnavailable(self.connector, "the server refused IDLE")
            sock = imap.socket()
            sock.settimeout(seconds)
            changed = False
            try:
                line = imap.readline()
                changed = bool(line)
            except TimeoutError:
                pass
            finally:
                sock.settimeout(None)
            imap.send(b"DONE\r\n")
            while not (line := imap.readline()).startswith(b"CLIDLE"):
                if not line:
                    raise ConnectorUnavailable(self.connector, "the server closed the connection")
        return changed

    def noop(self) -> None:
        with _converted(self.connector, "checking the connection"):
            self._imap.noop()

    def abort(self) -> None:
        """Cut the connection from another thread: a call blocked on it (IDLE) fails at once."""
        with contextlib.suppress(OSError):
            self._imap.socket().shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        try:
            self._imap.logout()
        except (imaplib.IMAP4.error, OSError):
            with contextlib.suppress(OSError):
                self._imap.shutdown()


@contextmanager
def _converted(connector: str, doing: str) -> Iterator[None]:
    try:
        yield
    except ConnectorError:
        raise
    except ssl.SSLError as e:  # a certificate is not a passing outage: asking again will not help
        raise ConnectorError(connector, tls_problem(doing, e)) from e
    except TimeoutError as e:
        raise ConnectorUnavailable(connector, f"no answer in time while {doing}: is the server up?") from e
    except (OSError, imaplib.IMAP4.abort, EOFError) as e:
        raise ConnectorUnavailable(
            connector, f"the connection failed while {doing} ({type(e).__name__}): check host, port and tls"
        ) from e
    except imaplib.IMAP4.error as e:
        raise ConnectorRejected(connector, f"the server refused {doing}: {_text(e.args)}") from e


def tls_problem(doing: str, error: ssl.SSLError) -> str:
    """What a failed TLS handshake means and what to check (shared by the mail connectors)."""
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or type(error).__name__
    return f"TLS failed while {doing} ({reason}): check tls, and ca_file for a server with its own CA"


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(detail: Any) -> str:
    items = detail if isinstance(detail, (list, tuple)) else [detail]
    return " ".join(i.decode(errors="replace") if isinstance(i, bytes) else str(i) for i in items)[:200]


class _FindArguments(pydantic.BaseModel):
    mailbox: str
    message_id: str


FIND = OperationSpec(
    "find", "read", _FindArguments, bool, "Whether a mailbox holds the message with this Message-ID."
)


class ImapConnector:
    """Opens sessions for the inbox trigger; as a workflow connector it offers ``find``."""

    def __init__(self, setup: ConnectorSetup) -> None:
        assert isinstance(setup.settings, ImapSettings)
        self.name = setup.name
        self.settings: ImapSettings = setup.settings
        self._credentials = setup.credentials

    def operations(self) -> Mapping[str, OperationSpec]:
        return {FIND.name: FIND}

    async def password(self) -> SecretValue:
        return await self._credentials.resolve(self.settings.password, f"[connectors.{self.name}] password")

    def open(self, password: SecretValue) -> ImapSession:
        """A logged-in session (blocking)."""
        return ImapSession.open(self.name, self.settings, password)

    async def invoke(self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str) -> Any:
        assert isinstance(arguments, _FindArguments)
        return await self.holds(arguments.mailbox, arguments.message_id)

    async def holds(self, mailbox: str, message_id: str) -> bool:
        """Whether ``mailbox`` holds the message with ``message_id`` (e.g. did a sent email reach Sent)."""
        return bool(await self._session_call(lambda s: s.find(mailbox, message_id)))

    async def save(self, mailbox: str, raw: bytes, message_id: str) -> None:
        """Append ``raw`` to ``mailbox`` (marked seen) unless it already holds ``message_id``."""

        def save(session: ImapSession) -> None:
            if not session.find(mailbox, message_id):
                session.append(mailbox, raw)

        await self._session_call(save)

    async def _session_call(self, fn: Callable[[ImapSession], Any]) -> Any:
        password = await self.password()

        def call() -> Any:
            session = self.open(password)
            try:
                return fn(session)
            finally:
                session.close()

        return await asyncio.to_thread(call)

    async def aclose(self) -> None:
        return None


def _problems(name: str, settings: ConnectorSettings, credentials: Any) -> list[str]:
    assert isinstance(settings, ImapSettings)
    problems: list[str] = credentials.problems(settings.password, f"[connectors.{name}] password")
    return problems


CONNECTOR = ConnectorType(settings=ImapSettings, build=ImapConnector, problems=_problems)
