"""``crewline secrets``: store, list and remove the secrets ``secret:NAME`` references resolve to.

A value is read from standard input or a hidden prompt, never from the command line (argv is visible
to every user of the machine and kept in shell history). Values are encrypted with the key from
``CREWLINE_SECRETS_KEY`` or ``[secrets] key_file``; ``crewline secrets keygen`` prints a new key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from ..secret_store import SecretStore, new_key, secrets_key
from ..store import open_database
from ._common import echo_json, errors_as_exit, load_settings, note_database, run_async, table, when

__all__ = ["secrets"]

T = TypeVar("T")


@click.group()
def secrets() -> None:
    """Secrets for credential references (secret:NAME in crewline.toml), encrypted at rest."""


def _with_store(fn: Callable[[SecretStore], Coroutine[Any, Any, T]]) -> T:
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        key = secrets_key(settings, os.environ)
        db = open_database(settings.database_url)
    try:
        with errors_as_exit():
            return run_async(fn(SecretStore(db, key)))
    finally:
        db.close()


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value: str = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
        return value
    # Piped in: one value, its trailing newline dropped (what `echo "$TOKEN" | ...` adds).
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


@secrets.command("set")
@click.argument("name")
def set_cmd(name: str) -> None:
    """Store (or replace) secret NAME; the value comes from stdin or a hidden prompt.

    A connector using secret:NAME picks up a replaced value on its next call, without a restart.
    """
    value = _read_value(name)
    version = _with_store(lambda store: store.set(name, value))
    click.echo(f"secret {name} stored (version {version}); reference it as secret:{name}")


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """Names, versions and dates of the stored secrets (never their values)."""
    found = _with_store(lambda store: store.entries())
    if as_json:
        echo_json([vars(s) for s in found])
        return
    if not found:
        click.echo("no secrets stored; add one with `crewline secrets set NAME`")
        return
    rows = [(s.name, s.version, when(s.created_at), when(s.updated_at)) for s in found]
    click.echo(table(["name", "version", "created", "updated"], rows))


@secrets.command("rm")
@click.argument("name")
def rm_cmd(name: str) -> None:
    """Remove secret NAME (a reference to it then fails, naming it)."""
    if not _with_store(lambda store: store.remove(name)):
        click.echo(
            f"crewline: error: no secret named {name!r} (`crewline secrets list` shows them)", err=True
        )
        raise SystemExit(2)
    click.echo(f"secret {name} removed")


@secrets.command("keygen")
def keygen_cmd() -> None:
    """Print a new secrets key: put it in CREWLINE_SECRETS_KEY or in a file named by [secrets] key_file."""
    click.echo(new_key())
    click.echo(
        "keep it outside the database and its backups; secrets stored with one key are not read with another",
        err=True,
    )
