"""``crewline db``: schema status and upgrades, backups and restores."""

from __future__ import annotations

from pathlib import Path

import click

from ..store import Database
from ..store.backup import backup, restore
from ..store.migrate import pending, upgrade, versions
from ._common import database_label, errors_as_exit, load_settings, note_database, table

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database: schema, backups, restores."""


@db.command("upgrade")
def upgrade_cmd() -> None:
    """Apply every missing migration."""
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        database = Database(settings.database_url)
        try:
            applied = upgrade(database)
        finally:
            database.close()
    for line in applied:
        click.echo(f"applied {line}")
    click.echo("schema is up to date" if not applied else f"{len(applied)} migrations applied")


@db.command("status")
def status_cmd() -> None:
    """Show applied and pending migrations per component."""
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        database = Database(settings.database_url)
        try:
            have, todo = versions(database), pending(database)
        finally:
            database.close()
    click.echo(f"database: {database_label(settings.database_url)}")
    click.echo(table(["component", "version"], sorted(have.items())))
    for component, m in todo:
        click.echo(f"pending: {component} {m.version}: {m.name}")


_PATH = click.Path(dir_okay=False, path_type=Path)


@db.command("backup")
@click.argument("path", type=_PATH)
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup_cmd(path: Path, force: bool) -> None:
    """Write a consistent backup of the database to PATH, safe while servers and workers run.

    SQLite: an online copy of the file, integrity-checked. PostgreSQL: a pg_dump archive (custom
    format), listed back to check it; a password in the URL reaches pg_dump through PGPASSWORD only.
    """
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        backup(settings.database_url, path, force=force)
    click.echo(f"backed up {database_label(settings.database_url)} to {path}")


@db.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace what a non-empty target database holds.")
def restore_cmd(path: Path, force: bool) -> None:
    """Restore the backup at PATH into the configured database, then migrate it forward.

    The target must be empty (a fresh SQLite file or PostgreSQL database) unless --force. Start
    workers afterwards: runs that were running when the backup was taken resume once their leases
    lapse, replaying their recorded steps.
    """
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        done = restore(settings.database_url, path, force=force)
    for line in done.migrated:
        click.echo(f"applied {line}")
    click.echo(f"restored {path} into {database_label(settings.database_url)}")
