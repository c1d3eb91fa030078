"""What an inbox trigger keeps in the database: its lease on the mailbox, its watermark, its health.

One row of ``inbox_state`` per trigger. The lease (``holder``, ``lease_until``) makes exactly one worker
process read a mailbox however many run on one PostgreSQL: taking it is one conditional UPDATE, won by
one writer. The watermark is the mailbox's UIDVALIDITY and the highest UID handled; a new UIDVALIDITY
means the server renumbered the mailbox, so the old UIDs say nothing and the Message-ID (the run's
idempotency key) is what keeps an email from starting a second run. Health (last poll, last success, the
last error, since when it fails, messages seen and skipped) is what ``crewline triggers`` and
``GET /api/v1/triggers`` show; ``failing_since`` turning from empty to set is the one moment an outage is
announced, whichever process sees it. ``inbox_messages`` records every email handled (with its run) or
skipped (with the reason and the raw email as a blob): nothing is dropped silently; ``inbox_attachments``
holds the blobs of attachments, so that ``crewline prune`` sees them referenced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..store.database import Conn
from ..store.payloads import put_blob

__all__ = [
    "InboxState",
    "advance",
    "keep_attachments",
    "list_states",
    "load_state",
    "record_message",
    "record_poll",
    "release_lease",
    "take_lease",
]

_COLUMNS = (
    "trigger_name, mailbox, uidvalidity, last_uid, holder, lease_until, last_poll, last_success, "
    "last_error, failing_since, messages_seen, messages_skipped"
)


@dataclass(frozen=True)
class InboxState:
    trigger: str
    mailbox: str
    uidvalidity: int
    last_uid: int
    holder: str | None
    lease_until: float
    last_poll: float | None
    last_success: float | None
    last_error: str | None
    failing_since: float | None
    messages_seen: int
    messages_skipped: int


def take_lease(conn: Conn, trigger: str, mailbox: str, holder: str, now: float, seconds: float) -> bool:
    """Take or renew the lease on ``trigger``'s mailbox for ``holder``; False while another holds it."""
    conn.execute(
        "INSERT INTO inbox_state (trigger_name, mailbox) VALUES (?, ?) ON CONFLICT (trigger_name) DO NOTHING",
        (trigger, mailbox),
    )
    taken = conn.execute(
        "UPDATE inbox_state SET holder = ?, lease_until = ? "
        "WHERE trigger_name = ? AND (holder IS NULL OR holder = ? OR lease_until < ?)",
        (holder, now + seconds, trigger, holder, now),
    )
    return int(taken.rowcount) == 1


def release_lease(conn: Conn, trigger: str, holder: str) -> None:
    conn.execute(
        "UPDATE inbox_state SET holder = NULL, lease_until = 0 WHERE trigger_name = ? AND holder = ?",
        (trigger, holder),
    )


def load_state(conn: Conn, trigger: str) -> InboxState | None:
    row = conn.one(f"SELECT {_COLUMNS} FROM inbox_state WHERE trigger_name = ?", (trigger,))
    return None if row is None else InboxState(*row)


def list_states(conn: Conn) -> list[InboxState]:
    return [InboxState(*row) for row in conn.all(f"SELECT {_COLUMNS} FROM inbox_state ORDER BY trigger_name")]


def advance(conn: Conn, trigger: str, holder: str, uidvalidity: int, uid: int) -> bool:
    """Move the watermark to ``uid`` under ``uidvalidity``; False when ``holder`` lost the lease."""
    moved = conn.execute(
        "UPDATE inbox_state SET uidvalidity = ?, last_uid = ? WHERE trigger_name = ? AND holder = ?",
        (uidvalidity, uid, trigger, holder),
    )
    return int(moved.rowcount) == 1


@dataclass(frozen=True)
class Handled:
    """One email as :func:`record_message` keeps it."""

    trigger: str
    uidvalidity: int
    uid: int
    message_id: str | None
    status: Literal["started", "skipped"]
    run_id: str | None = None
    reason: str | None = None
    raw: bytes | None = None  # kept for a skipped email


def record_message(conn: Conn, handled: Handled, now: float) -> None:
    blob = None if handled.raw is None else put_blob(conn, handled.raw, now)
    inserted = conn.execute(
        "INSERT INTO inbox_messages (trigger_name, uidvalidity, uid, message_id, run_id, status, reason, "
        "raw_blob, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (trigger_name, uidvalidity, uid) DO NOTHING",
        (
            handled.trigger,
            handled.uidvalidity,
            handled.uid,
            handled.message_id,
            handled.run_id,
            handled.status,
            handled.reason,
            blob,
            now,
        ),
    )
    if int(inserted.rowcount) == 1:
        counter = "messages_seen" if handled.status == "started" else "messages_skipped"
        conn.execute(
            f"UPDATE inbox_state SET {counter} = {counter} + 1 WHERE trigger_name = ?", (handled.trigger,)
        )


def skipped_messages(conn: Conn, trigger: str) -> list[tuple[int, str | None, str]]:
    """(uid, Message-ID, reason) of each email the trigger skipped, oldest first."""
    rows = conn.all(
        "SELECT uid, message_id, reason FROM inbox_messages WHERE trigger_name = ? AND status = 'skipped' "
        "ORDER BY at",
        (trigger,),
    )
    return [(int(r[0]), r[1], str(r[2])) for r in rows]


def keep_attachments(
    conn: Conn, trigger: str, at: tuple[int, int], blobs: Mapping[str, bytes], now: float
) -> None:
    """Store an email's attachments as blobs, referenced by (UIDVALIDITY, UID) ``at`` in the same
    transaction, so no blob sweep finds them unreferenced in between."""
    for digest, data in blobs.items():
        put_blob(conn, data, now)
        conn.execute(
            "INSERT INTO inbox_attachments (trigger_name, uidvalidity, uid, attachment_blob) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (trigger, at[0], at[1], digest),
        )


PollOutcome = Literal["ok", "recovered", "failing", "outage"]


def record_poll(conn: Conn, trigger: str, now: float, error: str | None) -> PollOutcome:
    """Record a poll; ``outage`` the first failure after success (announce it once), ``recovered`` the
    first success after failures, else ``ok`` or ``failing``."""
    row = conn.one("SELECT failing_since FROM inbox_state WHERE trigger_name = ?", (trigger,))
    was_failing = row is not None and row[0] is not None
    if error is None:
        conn.execute(
            "UPDATE inbox_state SET last_poll = ?, last_success = ?, failing_since = NULL "
            "WHERE trigger_name = ?",
            (now, now, trigger),
        )
        return "recovered" if was_failing else "ok"
    conn.execute(
        "UPDATE inbox_state SET last_poll = ?, last_error = ?, failing_since = COALESCE(failing_since, ?) "
        "WHERE trigger_name = ?",
        (now, error[:500], now, trigger),
    )
    return "failing" if was_failing else "outage"
