"""``crewline triggers``: each inbox trigger's health, and the emails it skipped with their reasons."""

from __future__ import annotations

from typing import Any

import click

from ..app import App
from ..workers.inbox import health_report
from ..workers.inbox_state import list_states, skipped_messages
from ._common import echo_json, errors_as_exit, load_settings, note_database, table, when

__all__ = ["triggers"]


def _app() -> App:
    settings = load_settings()
    note_database(settings)
    return App(settings=settings)


@click.group()
def triggers() -> None:
    """Inbox triggers ([triggers.NAME] in crewline.toml): health and skipped emails.

    The workers (`crewline worker`, `crewline serve`) run them."""


@triggers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Each trigger: its mailbox and workflow, status, last poll and success, the last error, messages."""
    app = _app()
    try:
        with errors_as_exit():
            report = health_report(app.settings.sections.get("triggers"), app.db.query(list_states))
    finally:
        app.close()
    if as_json:
        echo_json(report)
        return
    if not report:
        click.echo('no triggers; add [triggers.inbox] connector = "mail", workflow = "..." to crewline.toml')
        return
    headers = ["trigger", "mailbox", "workflow", "status", "last poll", "last success", "seen", "skipped"]
    rows = [_row(t) for t in report]
    click.echo(table([*headers, "last error"], rows))


def _row(t: dict[str, Any]) -> list[Any]:
    where = f"{t['connector']}/{t['mailbox']}"
    polled = [when(t["last_poll"]), when(t["last_success"])]
    counts = [t["messages_seen"] or 0, t["messages_skipped"] or 0, t["last_error"] or "-"]
    return [t["name"], where, t["workflow"], t["status"], *polled, *counts]


@triggers.command("skipped")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def skipped_cmd(name: str, as_json: bool) -> None:
    """The emails trigger NAME passed over, with the reason (they stay in the mailbox, untouched)."""
    app = _app()
    try:
        with errors_as_exit():
            rows = app.db.query(lambda c: skipped_messages(c, name))
    finally:
        app.close()
    if as_json:
        echo_json([{"uid": u, "message_id": m, "reason": r} for u, m, r in rows])
        return
    click.echo(table(["uid", "message-id", "reason"], rows) if rows else f"trigger {name!r} skipped no email")
