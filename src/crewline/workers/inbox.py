"""The inbox trigger: ``[triggers.NAME]`` reads an IMAP mailbox and starts one run per email.

Each worker process runs every configured trigger as a chore, but only the one holding the trigger's
lease (:mod:`crewline.workers.inbox_state`) keeps a connection to the mailbox: one connection per
mailbox across every worker on the database, unlike n8n's trigger whose leaked connections fire an
email many times. The holder waits in IDLE (polling every ``poll_interval`` where the server has no
IDLE), fetches what lies above its watermark, and for each email: parses it into a
:class:`~crewline.connectors.records.Message` (attachments into blobs), starts the workflow with the
Message-ID as the run's idempotency key, marks the email seen or moves it, then advances the watermark.
A crash between any two of those repeats the email, and the idempotency key returns the run already
started: each email starts exactly one run across restarts, renumbered mailboxes and workers. An email
that cannot be used (see :mod:`crewline.connectors.email_message`) is recorded with its reason and raw
bytes and passed over, never retried forever. A failing server is retried with capped exponential
backoff; the first failure of an outage (decided in the database, so once across processes) is one
:class:`~crewline.observe.events.AlertEvent`, the first success after it another; every poll is a
:class:`~crewline.observe.events.TriggerEvent`, and health is kept in the database for ``crewline
triggers``. Unlike a silent stop, a trigger that keeps failing shows ``failing since`` there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from ..config import parse_duration, parse_size
from ..connectors.email_message import parse_email
from ..connectors.imap import ImapConnector, ImapSession, Mailbox
from ..connectors.registry import Connectors
from ..errors import ConfigError, ConnectorError, CrewlineError, InvalidInput
from ..observe.events import AlertEvent, Observers, TriggerEvent
from ..store.database import Conn, Database
from .inbox_state import (
    Handled,
    InboxState,
    PollOutcome,
    advance,
    keep_attachments,
    load_state,
    record_message,
    record_poll,
    release_lease,
    take_lease,
)
from .worker import Chore

__all__ = [
    "InboxTrigger",
    "InboxWiring",
    "TriggerSettings",
    "health_report",
    "parse_triggers",
    "triggers_problems",
]

log = logging.getLogger("crewline.inbox")

# Starts a run: (workflow, input, idempotency key) -> run id. The app's ``start``, handed in from above.
Starter = Callable[[str, Any, str], Awaitable[str]]


def _duration(value: object) -> float:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _size(value: object) -> int:
    try:
        return parse_size(value)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ValueError(str(e)) from None


class TriggerSettings(pydantic.BaseModel):
    """One ``[triggers.NAME]`` table."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    connector: str
    workflow: str
    mailbox: str = "INBOX"
    after: str = "seen"  # "seen" | "move:FOLDER"
    idle: bool = True
    poll_interval: float = 60.0
    backoff_max: float = 300.0
    lease: float = 60.0
    max_message_size: int = 25 * 2**20
    max_attachment_size: int = 10 * 2**20

    _durations = pydantic.field_validator("poll_interval", "backoff_max", "lease", mode="before")(_duration)
    _sizes = pydantic.field_validator("max_message_size", "max_attachment_size", mode="before")(_size)

    @pydantic.field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        if value != "seen" and not (value.startswith("move:") and value[5:].strip()):
            raise ValueError('must be "seen" or "move:FOLDER"')
        return value


def parse_triggers(section: object) -> dict[str, TriggerSettings]:
    """The ``[triggers.*]`` tables; a ConfigError names the trigger and the key."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError('[triggers] must hold one table per trigger: [triggers.inbox] connector = "mail"')
    out: dict[str, TriggerSettings] = {}
    for name, table in section.items():
        try:
            out[name] = TriggerSettings.model_validate(table)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "section"
            what = "is not a known key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ConfigError(f"[triggers.{name}] {where}: {what.removeprefix('Value error, ')}") from None
    return out


def health_report(section: object, states: list[InboxState]) -> list[dict[str, Any]]:
    """Each configured trigger with its health (``crewline triggers list``, ``GET /api/v1/triggers``):
    status ``ok``, ``failing`` (since ``failing_since``) or ``not polled yet``."""
    held = {s.trigger: s for s in states}
    out = []
    for name, settings in parse_triggers(section).items():
        state = held.get(name)
        health = {key: getattr(state, key, None) for key in _HEALTH}
        failing = health["failing_since"] is not None
        status = "failing" if failing else ("ok" if health["last_success"] else "not polled yet")
        out.append({"name": name, **settings.model_dump(), "status": status, **health})
    return out


_HEALTH = ("last_poll", "last_success", "last_error", "failing_since", "messages_seen", "messages_skipped")


def triggers_problems(section: object, connectors: object) -> list[str]:
    """What ``crewline config check`` reports about ``[triggers]``: its shape, an unknown connector."""
    try:
        triggers = parse_triggers(section)
    except ConfigError as e:
        return [str(e)]
    known = connectors if isinstance(connectors, Mapping) else {}
    return [
        f"[triggers.{name}] connector: no [connectors.{t.connector}] is configured"
        for name, t in triggers.items()
        if t.connector not in known
    ]


@dataclass(frozen=True)
class InboxWiring:
    """What a trigger needs from the app: the database, connectors, a way to start runs, the hub."""

    db: Database
    connectors: Connectors
    start: Starter
    holder: str
    observers: Observers | None = None


class InboxTrigger:
    """One ``[triggers.NAME]``; :meth:`run` is a worker chore that returns once ``stopping`` is set."""

    def __init__(self, name: str, settings: TriggerSettings, wiring: InboxWiring) -> None:
        self.name = name
        self.settings = settings
        self._wiring = wiring
        self._session: ImapSession | None = None
        self._idling = False

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = 1.0
        watcher = asyncio.create_task(self._abort_on(stopping))
        try:
            while not stopping.is_set():
                try:
                    if await self._take_lease():
                        await self._serve(stopping)
                        backoff = 1.0
                    else:
                        await _pause(stopping, self.settings.lease / 3)
                except Exception as e:  # a trigger that stops on one error is n8n's silent stop: back off
                    if stopping.is_set():
                        break
                    await self._failed(e)
                    await _pause(stopping, backoff)
                    backoff = min(backoff * 2, self.settings.backoff_max)
                finally:
                    await self._close()
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self._wiring.db.write(lambda c: release_lease(c, self.name, self._wiring.holder))

    async def _abort_on(self, stopping: asyncio.Event) -> None:
        """Cut the connection when stopping while it waits in IDLE, so that thread returns at once. An
        email being handled is finished first: the loop stops between emails."""
        await stopping.wait()
        session = self._session
        if session is not None and self._idling:
            session.abort()

    async def _take_lease(self) -> bool:
        s, holder = self.settings, self._wiring.holder
        return await self._wiring.db.write(
            lambda c: take_lease(c, self.name, s.mailbox, holder, time.time(), s.lease)
        )

    async def _serve(self, stopping: asyncio.Event) -> None:
        """Hold the mailbox: fetch what is new, wait for more, until stopping or the lease is lost."""
        connector = self._wiring.connectors.get(self.settings.connector)
        if not isinstance(connector, ImapConnector):
            raise ConfigError(f'[triggers.{self.name}] connector: {connector.name!r} is not type = "imap"')
        password = await connector.password()
        self._session = session = await asyncio.to_thread(connector.open, password)
        while not stopping.is_set():
            began = time.time()
            mailbox = await asyncio.to_thread(session.select, self.settings.mailbox)
            await self._fetch_new(session, mailbox, stopping)
            await self._polled(began, None)
            if not await self._take_lease():
                log.info("inbox %s: another worker holds the mailbox now", self.name)
                return
            await self._wait(session, stopping)

    async def _wait(self, session: ImapSession, stopping: asyncio.Event) -> None:
        window = min(self.settings.poll_interval, self.settings.lease / 3)
        if self.settings.idle and session.can_idle:
            self._idling = True
            try:
                if not stopping.is_set():
                    await asyncio.to_thread(session.idle, window)
            finally:
                self._idling = False
        else:
            await _pause(stopping, window)

    async def _fetch_new(self, session: ImapSession, mailbox: Mailbox, stopping: asyncio.Event) -> None:
        state = await self._wiring.db.read(lambda c: load_state(c, self.name))
        renumbered = state is None or state.uidvalidity != mailbox.uidvalidity
        if renumbered and state is not None and state.uidvalidity:
            log.warning("inbox %s: %s was renumbered (new UIDVALIDITY)", self.name, mailbox.name)
        last = 0 if renumbered or state is None else state.last_uid
        unseen_only = renumbered and self.settings.after == "seen"
        for uid in await asyncio.to_thread(session.uids_after, last, unseen_only=unseen_only):
            if stopping.is_set():
                return
            await self._handle(session, mailbox, uid)

    async def _handle(self, session: ImapSession, mailbox: Mailbox, uid: int) -> None:
        s = self.settings
        size = await asyncio.to_thread(session.size, uid)
        raw = None if size > s.max_message_size else await asyncio.to_thread(session.fetch, uid)
        handled: Handled
        if raw is None and size > s.max_message_size:
            reason = f"the email is {size} bytes, over max_message_size = {s.max_message_size}"
            handled = Handled(self.name, mailbox.uidvalidity, uid, None, "skipped", reason=reason)
        elif raw is None:
            return  # expunged meanwhile
        else:
            handled = await self._start(mailbox, uid, raw)
        if handled.status == "started":
            await asyncio.to_thread(self._after, session, uid)
        holder = self._wiring.holder

        def keep(conn: Conn) -> None:
            record_message(conn, handled, time.time())
            advance(conn, self.name, holder, mailbox.uidvalidity, uid)

        await self._wiring.db.write(keep)

    async def _start(self, mailbox: Mailbox, uid: int, raw: bytes) -> Handled:
        blobs: dict[str, bytes] = {}

        def keep(data: bytes) -> str:
            digest = hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return digest

        source = self.settings.connector
        limit = self.settings.max_attachment_size
        try:
            message = parse_email(raw, keep=keep, max_attachment_bytes=limit, source=source)
            if blobs:
                at = (mailbox.uidvalidity, uid)
                await self._wiring.db.write(lambda c: keep_attachments(c, self.name, at, blobs, time.time()))
            key = f"inbox:{self.name}:{message.message_id or hashlib.sha256(raw).hexdigest()}"
            payload = message.model_dump(mode="json")
            run_id = await self._wiring.start(self.settings.workflow, payload, key)
        except InvalidInput as e:
            log.warning("inbox %s: skipped UID %d: %s", self.name, uid, e)
            return Handled(self.name, mailbox.uidvalidity, uid, None, "skipped", reason=str(e), raw=raw)
        log.info("inbox %s: UID %d started run %s", self.name, uid, run_id)
        return Handled(self.name, mailbox.uidvalidity, uid, message.message_id, "started", run_id=run_id)

    def _after(self, session: ImapSession, uid: int) -> None:
        after = self.settings.after
        if after == "seen":
            session.mark_seen(uid)
        else:
            session.move(uid, after.removeprefix("move:").strip())

    async def _failed(self, error: Exception) -> None:
        if isinstance(error, (ConnectorError, ConfigError)):
            log.warning("inbox %s: %s", self.name, error)
        else:
            log.exception("inbox %s failed; trying again", self.name)
        try:
            await self._polled(time.time(), error)
        except Exception as e:  # the database itself may be what is down
            log.warning("inbox %s: cannot record its health: %s", self.name, e)

    async def _polled(self, began: float, error: Exception | None) -> None:
        text = None if error is None else _described(error)
        now = time.time()
        outcome: PollOutcome = await self._wiring.db.write(lambda c: record_poll(c, self.name, now, text))
        observers = self._wiring.observers
        if not observers:
            return
        kind = None if error is None else type(error).__name__
        observers.emit(TriggerEvent(f"inbox:{self.name}", error is None, now, now - began, kind))
        if outcome in ("outage", "recovered"):
            state: Literal["firing", "resolved"] = "firing" if outcome == "outage" else "resolved"
            summary = text or f"inbox {self.name} reads its mailbox again"
            observers.emit(AlertEvent(f"inbox:{self.name}", state, now, summary))

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.to_thread(session.close)


def _described(error: Exception) -> str:
    """What health shows: crewline's own messages (written to be shown), else only the error's type,
    as an unexpected error's text may hold anything (a path, a server's reply)."""
    if isinstance(error, CrewlineError):
        return str(error)
    return f"{type(error).__name__} (see the worker's log)"


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def inbox_chores(section: object, wiring: InboxWiring) -> list[Chore]:
    """A chore per configured trigger (``crewline worker`` and ``serve`` run them)."""
    return [InboxTrigger(name, t, wiring).run for name, t in parse_triggers(section).items()]
