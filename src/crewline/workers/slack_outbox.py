"""The Slack review outbox: one row per review request to show in Slack, from queued to posted to closed.

A row is keyed by the review's id, so however many workers notice a new request, it is queued once. A
worker *claims* due rows under a lease (other workers skip locked and leased rows), posts, and records
the message's channel and ``ts``; a failed post is retried with exponential backoff (or after the
``Retry-After`` Slack gave) until :data:`MAX_ATTEMPTS`. When a crash leaves a claimed row without its
``ts``, the next claim sees ``attempts > 0`` and first asks Slack whether the message arrived, so a
request is posted once. A row is *closed* once its message shows the decision. This module alone issues
SQL on ``slack_review_posts``; its schema is :data:`MIGRATIONS` (component ``slack_reviews``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..store.database import Conn
from ..store.dialects import CLAIM
from ..store.migrations import Migration

__all__ = [
    "MIGRATIONS",
    "Post",
    "claim_due",
    "close_post",
    "find_post",
    "known_reviews",
    "open_posts",
    "queue_posts",
    "record_failure",
    "record_posted",
]

PostState = Literal["queued", "posted", "closed", "failed"]
MAX_ATTEMPTS = 10
LEASE = 60.0
MAX_BACKOFF = 900.0

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "slack review posts",
        (
            """CREATE TABLE slack_review_posts (
                review_id TEXT PRIMARY KEY,
                connector TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at {real},
                channel TEXT,
                ts TEXT,
                error TEXT,
                created_at {real} NOT NULL,
                posted_at {real}
            )""",
            "CREATE INDEX slack_review_posts_due ON slack_review_posts (state, next_at)",
        ),
    ),
)

_COLUMNS = "review_id, connector, state, attempts, channel, ts, error, created_at"


@dataclass(frozen=True)
class Post:
    review_id: str
    connector: str
    state: PostState
    attempts: int
    channel: str | None
    ts: str | None
    error: str | None
    created_at: float


def _post(row: tuple[object, ...]) -> Post:
    review_id, connector, state, attempts, channel, ts, error, created_at = row
    return Post(
        str(review_id),
        str(connector),
        state,  # type: ignore[arg-type]  # written only by this module
        int(str(attempts)),
        None if channel is None else str(channel),
        None if ts is None else str(ts),
        None if error is None else str(error),
        float(str(created_at)),
    )


def queue_posts(conn: Conn, review_ids: Iterable[str], connector: str) -> int:
    """Queue a post for each review not queued before; returns how many were new."""
    now = time.time()
    added = 0
    for review_id in review_ids:
        inserted = conn.scalar(
            "INSERT INTO slack_review_posts (review_id, connector, state, next_at, created_at) "
            "VALUES (?, ?, 'queued', ?, ?) ON CONFLICT (review_id) DO NOTHING RETURNING review_id",
            (review_id, connector, now, now),
        )
        added += inserted is not None
    return added


def known_reviews(conn: Conn, review_ids: Iterable[str]) -> set[str]:
    """Which of ``review_ids`` already have a row."""
    ids = list(review_ids)
    if not ids:
        return set()
    rows = conn.all(
        f"SELECT review_id FROM slack_review_posts WHERE review_id IN ({', '.join('?' * len(ids))})", ids
    )
    return {str(r[0]) for r in rows}


def claim_due(conn: Conn, limit: int = 20, *, lease: float = LEASE) -> list[Post]:
    """Take queued rows that are due, leasing them to this worker for ``lease`` seconds (longer than a
    post with its retries can take)."""
    now = time.time()
    rows = conn.all(
        f"SELECT {_COLUMNS} FROM slack_review_posts WHERE state = 'queued' AND next_at <= ? "
        f"ORDER BY next_at LIMIT ?{conn.dialect.lock_rows_suffix(CLAIM)}",
        (now, limit),
    )
    for row in rows:
        conn.execute(
            "UPDATE slack_review_posts SET next_at = ?, attempts = attempts + 1 WHERE review_id = ?",
            (now + lease, row[0]),
        )
    return [_post(r) for r in rows]


def record_posted(conn: Conn, review_id: str, channel: str, ts: str) -> None:
    conn.execute(
        "UPDATE slack_review_posts SET state = 'posted', channel = ?, ts = ?, error = NULL, next_at = NULL, "
        "posted_at = ? WHERE review_id = ? AND state = 'queued'",
        (channel, ts, time.time(), review_id),
    )


def record_failure(conn: Conn, post: Post, error: str, retry_after: float | None) -> PostState:
    """A claimed post failed: due again after a backoff (at least ``retry_after``), or failed for good."""
    attempts = post.attempts + 1  # the claim counted this attempt in the row, not in ``post``
    if attempts >= MAX_ATTEMPTS:
        state: PostState = "failed"
        next_at = None
    else:
        state = "queued"
        next_at = time.time() + max(retry_after or 0.0, min(MAX_BACKOFF, 2.0 ** (attempts - 1)))
    conn.execute(
        "UPDATE slack_review_posts SET state = ?, next_at = ?, error = ? WHERE review_id = ? AND state = 'queued'",
        (state, next_at, error, post.review_id),
    )
    return state


def open_posts(conn: Conn, limit: int = 200) -> list[Post]:
    """Posted messages still showing their buttons."""
    rows = conn.all(
        f"SELECT {_COLUMNS} FROM slack_review_posts WHERE state = 'posted' ORDER BY posted_at LIMIT ?",
        (limit,),
    )
    return [_post(r) for r in rows]


def find_post(conn: Conn, review_id: str) -> Post | None:
    row = conn.one(f"SELECT {_COLUMNS} FROM slack_review_posts WHERE review_id = ?", (review_id,))
    return None if row is None else _post(row)


def close_post(conn: Conn, review_id: str) -> bool:
    """Done with a review: its message shows the decision (or it was decided before it was posted).
    False if it was closed already."""
    closed = conn.scalar(
        "UPDATE slack_review_posts SET state = 'closed', next_at = NULL WHERE review_id = ? "
        "AND state IN ('queued', 'posted') "
        "RETURNING review_id",
        (review_id,),
    )
    return closed is not None
