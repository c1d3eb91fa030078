"""Console sign-in sessions: one row per signed-in browser, found by the SHA-256 of its cookie's token.

A session lasts until it is idle for ``session_idle`` or ``session_max`` has passed since sign-in,
whichever comes first; signing out deletes it, and so does the first request after its API key was
revoked or expired. ``last_seen_at`` is written at most once a minute, so reading pages costs no write
each time. This module alone issues SQL on ``console_sessions``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from ..store.database import Conn

__all__ = [
    "Session",
    "delete_key_sessions",
    "delete_session",
    "find_session",
    "new_session",
    "seen",
]

_TOUCH_EVERY = 60.0
_COLUMNS = "token_hash, key_id, scope, csrf, created_at, expires_at, last_seen_at"


@dataclass(frozen=True)
class Session:
    token_hash: str
    key_id: str
    scope: str
    csrf: str
    created_at: float
    expires_at: float
    last_seen_at: float

    def ended(self, idle: float, now: float) -> bool:
        return now >= self.expires_at or now - self.last_seen_at >= idle


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(conn: Conn, key_id: str, scope: str, lifetime: float, now: float) -> tuple[Session, str]:
    """Store a session for the key and return it with its token (the cookie's value, kept nowhere)."""
    token = secrets.token_urlsafe(32)
    session = Session(token_hash(token), key_id, scope, secrets.token_urlsafe(32), now, now + lifetime, now)
    conn.execute(
        f"INSERT INTO console_sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            session.token_hash,
            key_id,
            scope,
            session.csrf,
            session.created_at,
            session.expires_at,
            now,
        ),
    )
    _forget_ended(conn, now)
    return session, token


def find_session(conn: Conn, token: str) -> Session | None:
    row = conn.one(f"SELECT {_COLUMNS} FROM console_sessions WHERE token_hash = ?", (token_hash(token),))
    return None if row is None else Session(*row)


def seen(conn: Conn, session: Session, now: float) -> bool:
    """Note that the session was used now, unless that was noted less than a minute ago."""
    if now - session.last_seen_at < _TOUCH_EVERY:
        return False
    conn.execute(
        "UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?", (now, session.token_hash)
    )
    return True


def delete_session(conn: Conn, hashed: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (hashed,))


def delete_key_sessions(conn: Conn, key_id: str) -> int:
    """End every session signed in with the key (it was revoked or expired)."""
    return int(conn.execute("DELETE FROM console_sessions WHERE key_id = ?", (key_id,)).rowcount)


def _forget_ended(conn: Conn, now: float) -> None:
    # Sessions past their absolute limit are swept at sign-in, so abandoned browsers leave no rows behind.
    conn.execute("DELETE FROM console_sessions WHERE expires_at < ?", (now,))
