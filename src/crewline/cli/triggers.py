"""``crewline triggers``: each inbox trigger's health, and the emails it skipped with their reasons."""

from __future__ import annotations

from dataclasses import asdict

import click

from ..app import App
from ..workers.inbox import parse_triggers
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
    """Each trigger: its mailbox and workflow, last poll and success, the last error, messages seen."""
    app = _app()
    try:
        with errors_as_exit():
            configured = parse_triggers(app.settings.sections.get("triggers"))
            states = {s.trigger: s for s in app.db.query(list_states)}
    finally:
        app.close()
    if as_json:
        echo_json([{"name": n, **asdict(t)} | _health(states.get(n)) for n, t in configured.items()])
        return
    if not configured:
        click.echo('no triggers; add [triggers.inbox] connector = "mail", workflow = "..." to crewline.toml')
        return
    rows = []
    for name, t in configured.items():
        h = _health(states.get(name))
        state = "FAILING" if h["failing_since"] else ("ok" if h["last_success"] else "not polled yet")
        where = f"{t.connector}/{t.mailbox}"
        polled = [when(h["last_poll"]), when(h["last_success"])]  # type: ignore[arg-type]
        counts = [h["messages_seen"], h["messages_skipped"], h["last_error"] or "-"]
        rows.append([name, where, t.workflow, state, *polled, *counts])
    headers = ["trigger", "mailbox", "workflow", "state", "last poll", "last success", "seen", "skipped"]
    click.echo(table([*headers, "last error"], rows))


def _health(state: object) -> dict[str, object]:
    keys = ("last_poll", "last_success", "last_error", "failing_since", "messages_seen", "messages_skipped")
    return {k: getattr(state, k, None) for k in keys} | {"holder": getattr(state, "holder", None)}


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
