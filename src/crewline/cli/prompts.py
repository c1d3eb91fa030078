"""``crewline prompts``: sync prompt files into the store, inspect their versions, move their labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ..config import Settings
from ..evals.gate import Override, label_prompt
from ..flows import prompts as p
from ..store import Database, open_database
from ._common import echo_json, errors_as_exit, fail, read_json_arg, table, user, when

__all__ = ["prompts"]

T = TypeVar("T")


def _with_db(fn: Callable[[Database], T]) -> T:
    with errors_as_exit():
        db = open_database(Settings.load().database_url)
        try:
            return fn(db)
        finally:
            db.close()


@click.group()
def prompts() -> None:
    """Prompt templates: files in prompts/, versioned by content hash, with labels."""


@prompts.command("sync")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The prompts directory (default: [prompts] dir in crewline.toml, else ./prompts).",
)
def sync_cmd(directory: Path | None) -> None:
    """Store new versions of the prompt files; `latest` follows the files, `production` stays."""
    with errors_as_exit():
        where = directory or p.prompts_dir(Settings.load())
    changes = _with_db(lambda db: p.sync_prompts(db, where))
    for c in changes:
        click.echo(_describe(c))
    if not changes:
        click.echo("prompts are up to date")


def _describe(c: p.PromptChange) -> str:
    if c.kind == "added":
        return f"added {c.name} {c.version} (production, latest)"
    stays = "" if c.production is None else f"; production stays at {c.production}"
    verb = "updated" if c.kind == "updated" else "restored"
    return f"{verb} {c.name} {c.previous} -> {c.version} (latest{stays})"


@prompts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """Stored prompts with their labels."""
    found = _with_db(p.list_prompts)
    if as_json:
        echo_json([s.to_json() for s in found])
        return
    rows = [
        (
            s.name,
            s.versions,
            " ".join(f"{k}={v}" for k, v in s.labels.items()),
            s.meta.get("model"),
            s.meta.get("output"),
            when(s.updated_at),
            s.meta.get("description"),
        )
        for s in found
    ]
    click.echo(table(["name", "versions", "labels", "model", "output", "updated", "description"], rows))


@prompts.command("show")
@click.argument("ref")
@click.option("--render", "params", default=None, help="Render with these parameters (JSON or @file.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(ref: str, params: str | None, as_json: bool) -> None:
    """Show REF: NAME (production, else latest), NAME@label or NAME@version."""
    values = read_json_arg(params, "--render")
    if values is not None and not isinstance(values, dict):
        fail("--render must be a JSON object of parameter names to values")
    prompt = _with_db(lambda db: p.resolve(db, ref))
    rendered = None
    if values is not None:
        with errors_as_exit():
            rendered = p.render(prompt, values)
    if as_json:
        echo_json({**prompt.to_json(), **({} if rendered is None else {"rendered": rendered})})
        return
    labels = f"  ({', '.join(prompt.labels)})" if prompt.labels else ""
    click.echo(f"{prompt.ref}{labels}")
    for key, value in prompt.meta.items():
        click.echo(f"{key}: {', '.join(value) if key == 'params' else value}")
    click.echo(f"stored: {when(prompt.created_at)}")
    click.echo("---")
    click.echo(prompt.body if rendered is None else rendered, nl=False)


@prompts.command("diff")
@click.argument("name")
@click.argument("a")
@click.argument("b")
def diff_cmd(name: str, a: str, b: str) -> None:
    """Differences between versions (or labels) A and B of prompt NAME."""
    text = _with_db(lambda db: p.diff(db, name, a, b))
    click.echo(text or f"{name}@{a} and {name}@{b} are the same version", nl=not text)


@prompts.command("label")
@click.argument("name")
@click.argument("label")
@click.argument("version", required=False)
@click.option("--remove", is_flag=True, help="Remove LABEL instead of moving it.")
@click.option("--force", is_flag=True, help="Label production without the passing evaluation (audited).")
@click.option("--reason", help="Why --force skips the evaluation (recorded with who and when).")
def label_cmd(
    name: str, label: str, version: str | None, remove: bool, force: bool, reason: str | None
) -> None:
    """Point LABEL of prompt NAME at VERSION (a version, a unique prefix of one, or another label).

    With a required [evals.NAME] for the prompt, `production` needs a passing evaluation of VERSION on
    the dataset's current version (`crewline eval run`); --force --reason overrides it and is audited.
    """
    if remove == (version is not None):
        fail("give the VERSION to point the label at, or --remove (not both)")
    if force and not reason:
        fail("--force needs --reason: say why the evaluation is skipped (it is audited)")
    if remove:
        change = _with_db(lambda db: p.remove_label(db, name, label))
        click.echo(f"{name}: removed {label} (was {change.previous})")
        return
    assert version is not None
    override = Override(user(), reason or "") if force else None
    with errors_as_exit():
        settings = Settings.load()
    change = _with_db(lambda db: label_prompt(db, settings, name, label, version, force=override))
    was = "" if change.previous in (None, change.version) else f" (was {change.previous})"
    click.echo(f"{name}: {label} -> {change.version}{was}")
