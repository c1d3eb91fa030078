"""``crewline db``: schema status and upgrades."""

from __future__ import annotations

import click

from ..config import Settings
from ..store import Database
from ..store.migrate import pending, upgrade, versions
from ._common import errors_as_exit, table

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def upgrade_cmd() -> None:
    """Apply every missing migration."""
    with errors_as_exit():
        database = Database(Settings.load().database_url)
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
    with errors_as_exit():
        database = Database(Settings.load().database_url)
        try:
            have, todo = versions(database), pending(database)
        finally:
            database.close()
    click.echo(f"database: {database.dialect.safe_url()}")
    click.echo(table(["component", "version"], sorted(have.items())))
    for component, m in todo:
        click.echo(f"pending: {component} {m.version}: {m.name}")
