"""Backups and restores of the whole database, consistent while workers and servers keep writing.

SQLite is copied with its online backup API (a consistent snapshot however busy the file is), then the
copy's ``PRAGMA integrity_check`` must say ``ok``. PostgreSQL is dumped with ``pg_dump`` in its custom
format, then read back with ``pg_restore --list``; the connection comes from the URL, its password only
through ``PGPASSWORD`` in the tool's environment (never on its command line, where any user of the
machine could read it, nor in a message).

A restore goes into an empty target (a fresh file or database) unless ``force`` is given; a backup whose
schema is newer than this code is refused before anything is written, and an older one is migrated
forward afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, InvalidInput, MigrationError, StoreError
from .database import Conn, Database
from .dialects import SqliteDialect, dialect_for_url
from .migrate import VERSIONS_TABLE, applied_versions, upgrade
from .migrations import components

__all__ = ["Restored", "backup", "restore"]


@dataclass(frozen=True)
class Restored:
    """What a restore did: the schema versions found in the backup, and the migrations applied after."""

    versions: dict[str, int]
    migrated: list[str]


class _Tool(Protocol):
    def backup(self, path: Path) -> None: ...
    def versions_in(self, path: Path) -> dict[str, int]: ...
    def is_empty(self) -> bool: ...
    def restore(self, path: Path, *, force: bool) -> None: ...


def backup(url: str, path: Path, *, force: bool = False) -> None:
    """Write a consistent copy of the database at ``url`` to ``path`` and check that it reads back."""
    if path.exists() and not force:
        raise InvalidInput(f"{path} already exists: choose another path, or pass --force to replace it")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path.parent} is not a directory: create it first")
    partial = path.with_name(path.name + ".partial")
    try:
        _tool(url).backup(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def restore(url: str, path: Path, *, force: bool = False) -> Restored:
    """Restore the backup at ``path`` into the database at ``url``, then migrate it forward."""
    if not path.is_file():
        raise InvalidInput(f"no backup at {path}: give the file `crewline db backup` wrote")
    tool = _tool(url)
    try:
        found = tool.versions_in(path)
    except StoreError as e:
        raise InvalidInput(f"{path} is not a backup this database can read: {e}") from e
    if not found:
        raise InvalidInput(f"{path} is not a crewline backup: it records no schema versions")
    _refuse_newer(found)
    if not force and not tool.is_empty():
        raise InvalidInput(
            "the target database is not empty: restore into a fresh file or database, "
            "or pass --force to replace what it holds"
        )
    tool.restore(path, force=force)
    db = Database(url)
    try:
        migrated = upgrade(db)
    finally:
        db.close()
    return Restored(found, migrated)


def _refuse_newer(found: dict[str, int]) -> None:
    known = components()
    for component, version in sorted(found.items()):
        steps = known.get(component)
        want = steps[-1].version if steps else 0
        if version > want:
            raise MigrationError(
                f"the backup's schema for {component} is at version {version}, newer than this "
                f"crewline knows ({want}): restore it with the crewline version that wrote it, or upgrade"
            )


def _tool(url: str) -> _Tool:
    dialect = dialect_for_url(url)
    if isinstance(dialect, SqliteDialect):
        return _SqliteTool(dialect)
    return _PostgresTool(url)


# -- SQLite ------------------------------------------------------------------------------------------------


class _SqliteTool:
    def __init__(self, dialect: SqliteDialect) -> None:
        self.dialect = dialect
        self.path = dialect.path

    def backup(self, path: Path) -> None:
        if not self.path.is_file():
            raise InvalidInput(f"there is no database at {self.path} to back up")
        source = sqlite3.connect(str(self.path), timeout=30.0)
        target = sqlite3.connect(str(path))
        try:
            source.backup(target)  # a snapshot: pages written meanwhile make it start over
        finally:
            source.close()
            target.close()
        _check_integrity(path)

    def versions_in(self, path: Path) -> dict[str, int]:
        _check_integrity(path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return applied_versions(Conn(conn, self.dialect))
        finally:
            conn.close()

    def is_empty(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return True
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]) == 0
        finally:
            conn.close()

    def restore(self, path: Path, *, force: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(str(self.path), timeout=30.0)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        _check_integrity(self.path)


def _check_integrity(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = [str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a readable SQLite database: {e}") from e
    if verdict != ["ok"]:
        raise StoreError(f"{path} failed SQLite's integrity check: {'; '.join(verdict[:3])}")


# -- PostgreSQL --------------------------------------------------------------------------------------------


class _PostgresTool:
    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self._args = [
            *(["--host", unquote(parts.hostname)] if parts.hostname else []),
            *(["--port", str(parts.port)] if parts.port else []),
            *(["--username", unquote(parts.username)] if parts.username else []),
        ]
        self._dbname = unquote(parts.path.lstrip("/")) or "postgres"
        self._env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        if parts.password is not None:
            self._env["PGPASSWORD"] = unquote(parts.password)

    def backup(self, path: Path) -> None:
        self._run("pg_dump", "--format=custom", "--file", str(path), "--dbname", self._dbname)
        self._run("pg_restore", "--list", str(path))

    def versions_in(self, path: Path) -> dict[str, int]:
        listing = self._run("pg_restore", "--data-only", f"--table={VERSIONS_TABLE}", "--file=-", str(path))
        rows: dict[str, int] = {}
        copying = False
        for line in listing.splitlines():
            if line.startswith("COPY ") and VERSIONS_TABLE in line:
                copying = True
            elif copying and line == "\\.":
                break
            elif copying:
                component, version, *_ = line.split("\t")
                rows[component] = int(version)
        return rows

    def is_empty(self) -> bool:
        db = Database(self.url)
        try:
            count = db.query(
                lambda conn: conn.scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            )
        finally:
            db.close()
        return int(count) == 0

    def restore(self, path: Path, *, force: bool) -> None:
        clean = ["--clean", "--if-exists"] if force else []
        self._run("pg_restore", *clean, "--no-owner", "--exit-on-error", "--dbname", self._dbname, str(path))

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [_pg_program(program), *self._args, *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise StoreError(f"{program} failed: {detail}")
        return done.stdout


def _pg_program(name: str) -> str:
    """The newest ``name`` of the PostgreSQL client tools (a dump needs a tool no older than the server):
    Debian keeps them under /usr/lib/postgresql/VERSION/bin, other systems on the PATH."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    versions = [p for p in found if p.split("/")[-3].isdigit()]
    if versions:
        return max(versions, key=lambda p: int(p.split("/")[-3]))
    on_path = shutil.which(name)
    if on_path is None:
        raise ConfigError(f"{name} is not installed: install the PostgreSQL client tools (postgresql-client)")
    return on_path
