"""``crewline alerts``: the alert rules and their state, the history of episodes, a test notice."""

from __future__ import annotations

from dataclasses import asdict

import click
import httpx

from ..app import App
from ..observe.alert_config import RULE_KINDS
from ..observe.alerts import list_history, rule_states
from ._common import echo_json, errors_as_exit, load_settings, note_database, run_async, table, when

__all__ = ["alerts"]


def _app() -> App:
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        app = App(settings=settings)
        app.alerting  # noqa: B018 -- reads [alerts] now, so a mistake in it is reported before anything else
    return app


@click.group()
def alerts() -> None:
    """Alert rules ([alerts.NAME] in crewline.toml), their history, and channel tests.

    The workers (`crewline worker`, `crewline serve`) evaluate the rules and send the notices."""


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Each rule: what it watches, its threshold and channels, and whether it is firing now."""
    app = _app()
    try:
        with errors_as_exit():
            states = app.db.query(rule_states)
    finally:
        app.close()
    rules = app.alerting.config.rules
    rows = []
    for name, rule in rules.items():
        firing, since, value = states.get(name, (False, None, None))
        state = "-" if rule.what == "budget" else ("FIRING" if firing else "ok")
        shown = "-" if value is None else f"{value:.4g}"
        channels = ",".join(rule.channels) or "-"
        rows.append(
            [name, rule.what, f"{rule.threshold:g}", channels, state, when(since) if firing else "-", shown]
        )
    headers = ["rule", "what", "threshold", "channels", "state", "since", "value"]
    if as_json:
        echo_json([dict(zip(headers, r, strict=True)) for r in rows])
        return
    if not rows:
        click.echo(
            f"no alert rules; add [alerts.NAME] tables to crewline.toml (what: {', '.join(RULE_KINDS)})"
        )
        return
    click.echo(table(headers, rows))


@alerts.command("history")
@click.option("--rule", help="Only this rule's episodes.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def history_cmd(rule: str | None, limit: int, as_json: bool) -> None:
    """Episode starts and ends and budget crossings, newest first, with how their notices fared."""
    app = _app()
    try:
        with errors_as_exit():
            entries = app.db.query(lambda conn: list_history(conn, rule=rule, limit=limit))
    finally:
        app.close()
    if as_json:
        echo_json([asdict(e) for e in entries])
        return
    if not entries:
        click.echo("no alerts yet")
        return
    rows = [
        [
            when(e.at),
            e.rule,
            e.state,
            f"{e.delivered} sent, {e.pending} retrying, {e.failed} failed",
            e.summary,
        ]
        for e in entries
    ]
    click.echo(table(["at", "rule", "state", "notices", "summary"], rows))


@alerts.command("test")
@click.argument("channel")
def test_cmd(channel: str) -> None:
    """Send a sample notice through CHANNEL ([alerts.channels.CHANNEL]) now, and say whether it went."""
    app = _app()

    async def go() -> None:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            await app.alerting.test(channel, client)

    try:
        with errors_as_exit():
            run_async(go())
    finally:
        app.close()
    click.echo(f"sent a test notice through {channel!r}")
