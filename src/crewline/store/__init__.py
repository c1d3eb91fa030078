"""The database: connect by URL, schema and migrations, payload blobs, retention."""

from __future__ import annotations

from .database import Conn, Database
from .migrate import check, upgrade

__all__ = ["Conn", "Database", "check", "open_database", "upgrade"]


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open the database at ``url``; with ``migrate`` bring its schema up to date first."""
    db = Database(url)
    if migrate:
        upgrade(db)
    return db
