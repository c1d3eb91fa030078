"""``crewline keys``: create, list and revoke API keys for the server."""

from __future__ import annotations

import time

import click

from ._common import app_option, echo_json, errors_as_exit, load_app, table, when

__all__ = ["keys"]

_SCOPES = ("admin", "operator", "reviewer", "trigger", "proxy")


@click.group()
def keys() -> None:
    """API keys for `crewline serve` (stored hashed; a key is shown only when created)."""


@keys.command("create")
@app_option
@click.option(
    "--scope",
    type=click.Choice(_SCOPES),
    required=True,
    help="admin: everything; operator: runs and reviews; reviewer: read and decide reviews; "
    "trigger: start runs and send events; proxy: model traffic only.",
)
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--budget", default=None, help="Spending limit for proxy calls, e.g. '$5/day'.")
@click.option("--rpm", type=click.IntRange(1, 1_000_000), default=None, help="Requests per minute.")
@click.option("--expires", default=None, help="Lifetime, e.g. 30d, 12h (default: never).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create(
    app_ref: str | None,
    scope: str,
    name: str,
    budget: str | None,
    rpm: int | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it once."""
    from ..server.keys import create_key, parse_budget, parse_lifetime

    with errors_as_exit():
        per_day = None if budget is None else parse_budget(budget)
        expires_at = None if expires is None else time.time() + parse_lifetime(expires, "--expires")
    app = load_app(app_ref)
    try:
        with errors_as_exit():
            key, token = app.db.run(
                lambda conn: create_key(
                    conn, scope=scope, name=name, budget_per_day=per_day, rpm=rpm, expires_at=expires_at
                )
            )
    finally:
        app.close()
    if as_json:
        echo_json({**key.to_json(), "key": token})
        return
    click.echo(token)
    click.echo(
        f"key {key.id} ({scope}) created; it is shown only this once: store it now. "
        f"Send it as `Authorization: Bearer <key>`.",
        err=True,
    )


@keys.command("list")
@app_option
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(app_ref: str | None, show_all: bool, as_json: bool) -> None:
    """Keys with their scope and status (never the keys themselves)."""
    from ..server.keys import list_keys

    app = load_app(app_ref)
    try:
        with errors_as_exit():
            found = app.db.query(lambda conn: list_keys(conn, include_revoked=show_all))
    finally:
        app.close()
    if as_json:
        echo_json([k.to_json() for k in found])
        return
    rows = [
        (
            k.id,
            k.name,
            k.scope,
            k.status(),
            when(k.created_at),
            when(k.expires_at),
            when(k.last_used_at),
            "-" if k.budget_per_day is None else f"${k.budget_per_day:g}/day",
            k.rpm,
        )
        for k in found
    ]
    click.echo(
        table(["id", "name", "scope", "status", "created", "expires", "last used", "budget", "rpm"], rows)
    )


@keys.command("revoke")
@app_option
@click.argument("key_id")
def revoke(app_ref: str | None, key_id: str) -> None:
    """Revoke KEY_ID (servers stop accepting it within their key cache time, 5s by default)."""
    from ..server.keys import revoke_key

    app = load_app(app_ref)
    try:
        with errors_as_exit():
            key = app.db.run(lambda conn: revoke_key(conn, key_id))
    finally:
        app.close()
    click.echo(f"key {key.id} revoked")
