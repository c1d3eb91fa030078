"""``crewline db``: schema status and upgrades."""

from __future__ import annotations

import click

from ..store import Database
from ..store.migrate import pending, upgrade, versions
from ._common import database_label, errors_as_exit, load_settings, note_database, table

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database schema."""


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
