"""Apply and check schema migrations (see :mod:`crewline.store.migrations`)."""

from __future__ import annotations

import time

from ..errors import MigrationError
from .database import Conn, Database
from .migrations import Migration, components

__all__ = ["VERSIONS_TABLE", "applied_versions", "check", "pending", "upgrade", "versions"]

VERSIONS_TABLE = "schema_versions"

_VERSIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied_at {real} NOT NULL
)"""


def versions(db: Database) -> dict[str, int]:
    """Applied version per component; empty for a blank database."""
    return db.query(applied_versions)


def applied_versions(conn: Conn) -> dict[str, int]:
    """Applied version per component on ``conn`` (a backup being checked, say); empty when blank."""
    if not _has_versions_table(conn):
        return {}
    return {c: int(v) for c, v in conn.all("SELECT component, version FROM schema_versions")}


def _has_versions_table(conn: Conn) -> bool:
    if conn.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_versions'"
    return conn.one(sql) is not None


def pending(db: Database, targets: dict[str, int] | None = None) -> list[tuple[str, Migration]]:
    applied = versions(db)
    out: list[tuple[str, Migration]] = []
    for component, migrations in components().items():
        top = (targets or {}).get(component, migrations[-1].version if migrations else 0)
        out.extend((component, m) for m in migrations if applied.get(component, 0) < m.version <= top)
    return out


def upgrade(db: Database, targets: dict[str, int] | None = None) -> list[str]:
    """Apply every missing migration (up to ``targets`` per component, for tests); returns what ran."""
    db.run(lambda conn: conn.execute(_VERSIONS_DDL))
    done: list[str] = []
    for component, migration in pending(db, targets):
        if _apply(db, component, migration):
            done.append(f"{component} {migration.version}: {migration.name}")
    return done


def _apply(db: Database, component: str, migration: Migration) -> bool:
    def apply(conn: Conn) -> bool:
        conn.lock_key("crewline-migrate")
        current = conn.scalar("SELECT version FROM schema_versions WHERE component = ?", (component,))
        if current is not None and current >= migration.version:
            return False  # another process got here first
        for step in migration.steps:
            try:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            except Exception as e:
                raise MigrationError(
                    f"migration {component} {migration.version} ({migration.name}) failed: {e}"
                ) from e
        conn.execute(
            "INSERT INTO schema_versions (component, version, applied_at) VALUES (?, ?, ?) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at",
            (component, migration.version, time.time()),
        )
        return True

    return db.run(apply)


def check(db: Database) -> None:
    """Raise :class:`MigrationError` unless the schema is exactly what this code expects."""
    applied = versions(db)
    for component, migrations in components().items():
        want = migrations[-1].version if migrations else 0
        have = applied.get(component, 0)
        if have < want:
            raise MigrationError(
                f"database schema for {component} is at version {have}, this code needs {want}: "
                "run `crewline db upgrade`"
            )
        if have > want:
            raise MigrationError(
                f"database schema for {component} is at version {have}, newer than this code ({want}): "
                "upgrade crewline"
            )
