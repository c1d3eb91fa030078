"""Schema of the triggers that run in workers: the ``inbox`` component's append-only migrations.

``inbox_state`` (a trigger's mailbox lease, its UID/UIDVALIDITY watermark and its health) and
``inbox_messages`` (each email handled or skipped, with the raw email of a skipped one as a blob) and
``inbox_attachments`` (the blobs of a started email's attachments, referenced here so that the blob sweep
of ``crewline prune`` keeps them: a run's input names them only inside its JSON) are owned by
:mod:`crewline.workers.inbox_state`. A released migration is never edited.
"""

from __future__ import annotations

from ..store.migrations import Migration

INBOX: tuple[Migration, ...] = (
    Migration(
        1,
        "inbox trigger state and messages",
        (
            """CREATE TABLE inbox_state (
                trigger_name TEXT PRIMARY KEY,
                mailbox TEXT NOT NULL,
                uidvalidity BIGINT NOT NULL DEFAULT 0,
                last_uid BIGINT NOT NULL DEFAULT 0,
                holder TEXT,
                lease_until {real} NOT NULL DEFAULT 0,
                last_poll {real},
                last_success {real},
                last_error TEXT,
                failing_since {real},
                messages_seen BIGINT NOT NULL DEFAULT 0,
                messages_skipped BIGINT NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE inbox_messages (
                trigger_name TEXT NOT NULL,
                uidvalidity BIGINT NOT NULL,
                uid BIGINT NOT NULL,
                message_id TEXT,
                run_id TEXT,
                status TEXT NOT NULL,
                reason TEXT,
                raw_blob TEXT,
                at {real} NOT NULL,
                PRIMARY KEY (trigger_name, uidvalidity, uid)
            )""",
            """CREATE TABLE inbox_attachments (
                trigger_name TEXT NOT NULL,
                uidvalidity BIGINT NOT NULL,
                uid BIGINT NOT NULL,
                attachment_blob TEXT NOT NULL,
                PRIMARY KEY (trigger_name, uidvalidity, uid, attachment_blob)
            )""",
        ),
    ),
)
