"""``crewline runs pause|resume``, ``crewline workflows ...``, ``crewline queues ...``, ``crewline flags ...``:
switching runs, workflows and queues off and on, and the flags workflows read, while everything runs."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import InvalidInput
from ..flows.steering import SwitchResult
from ..flows.switches import Flag
from ..store.payloads import parse_json
from ._common import app_option, echo_json, load_app, table, when, with_app
from .runs import runs

__all__ = ["flags", "queues", "workflows"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@runs.command("pause")
@app_option
@click.argument("run_id")
def pause_cmd(app_ref: str | None, run_id: str) -> None:
    """Pause a run: it holds no worker until resumed; a running one pauses at its next step boundary."""
    click.echo(with_app(lambda app: app.steering.pause(run_id), load_app(app_ref)))


@runs.command("resume")
@app_option
@click.argument("run_id")
def resume_cmd(app_ref: str | None, run_id: str) -> None:
    """Resume a paused run from its next step."""
    click.echo(with_app(lambda app: app.steering.resume(run_id), load_app(app_ref)))


def _say(result: SwitchResult, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(result.message())


@click.group()
def workflows() -> None:
    """Pause, resume, disable and enable workflows."""


@workflows.command("pause")
@app_option
@click.argument("name")
@_json_option
def workflow_pause_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Pause every unfinished run of a workflow, and keep its new runs waiting until resumed."""
    _say(with_app(lambda app: app.steering.pause_all("workflow", name), load_app(app_ref)), as_json)


@workflows.command("resume")
@app_option
@click.argument("name")
@_json_option
def workflow_resume_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Resume the runs a workflow pause paused (runs paused one by one stay paused)."""
    _say(with_app(lambda app: app.steering.resume_all("workflow", name), load_app(app_ref)), as_json)


@workflows.command("disable")
@app_option
@click.argument("name")
@click.option("--pause-running", is_flag=True, help="Pause its unfinished runs too (default: they finish).")
@_json_option
def disable_cmd(app_ref: str | None, name: str, pause_running: bool, as_json: bool) -> None:
    """Start no runs of a workflow (cron, webhooks, triggers and the API are refused) until enabled."""
    result = with_app(lambda app: app.steering.disable(name, pause_running=pause_running), load_app(app_ref))
    _say(result, as_json)


@workflows.command("enable")
@app_option
@click.argument("name")
@_json_option
def enable_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Let a disabled workflow start runs again, and resume the runs paused with it."""
    _say(with_app(lambda app: app.steering.enable(name), load_app(app_ref)), as_json)


@workflows.command("switches")
@app_option
@_json_option
def switches_cmd(app_ref: str | None, as_json: bool) -> None:
    """The workflows and queues that are paused or disabled."""
    found = with_app(lambda app: app.steering.switches(), load_app(app_ref))
    if as_json:
        echo_json([s.to_json() for s in found])
        return
    if not found:
        click.echo("no workflow or queue is paused or disabled")
        return
    rows = [
        (s.scope, s.name, "yes" if s.paused else "no", "yes" if s.disabled else "no", when(s.updated_at))
        for s in found
    ]
    click.echo(table(["scope", "name", "paused", "disabled", "since"], rows))


@click.group()
def queues() -> None:
    """Pause and resume every run of a queue."""


@queues.command("pause")
@app_option
@click.argument("name")
@_json_option
def queue_pause_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Pause every unfinished run of a queue, and keep its new runs waiting until resumed."""
    _say(with_app(lambda app: app.steering.pause_all("queue", name), load_app(app_ref)), as_json)


@queues.command("resume")
@app_option
@click.argument("name")
@_json_option
def queue_resume_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Resume the runs a queue pause paused."""
    _say(with_app(lambda app: app.steering.resume_all("queue", name), load_app(app_ref)), as_json)


@click.group()
def flags() -> None:
    """Flags workflows read with ctx.flag(name, default=...)."""


def flag_value(text: str) -> Any:
    """JSON (false, 3, "x", {...}) when it parses as JSON, else the text itself as a string."""
    try:
        return parse_json(text, "flag value")
    except InvalidInput as e:
        if text[:1] in '[{"' or "too deep" in str(e):
            # Meant as JSON, and it is not valid: say so rather than store the text.
            raise InvalidInput(f'{e}; pass JSON (false, 3, "text", {{...}}) or plain text') from None
        return text


def _show(flag: Flag, as_json: bool) -> None:
    if as_json:
        echo_json(flag.to_json())
    else:
        click.echo(f"{flag.name} = {_json_text(flag.value)}")


def _json_text(value: Any) -> str:
    return json.dumps(value)


@flags.command("set")
@app_option
@click.argument("name")
@click.argument("value")
@_json_option
def flag_set_cmd(app_ref: str | None, name: str, value: str, as_json: bool) -> None:
    """Set a flag to VALUE (JSON, e.g. false or 3; other text is a string). Runs read it from their
    next ctx.flag step on; runs that already read it keep what they saw."""
    _show(with_app(lambda app: app.steering.set_flag(name, flag_value(value)), load_app(app_ref)), as_json)


@flags.command("get")
@app_option
@click.argument("name")
@_json_option
def flag_get_cmd(app_ref: str | None, name: str, as_json: bool) -> None:
    """Show a flag's value."""
    _show(with_app(lambda app: app.steering.flag(name), load_app(app_ref)), as_json)


@flags.command("list")
@app_option
@_json_option
def flag_list_cmd(app_ref: str | None, as_json: bool) -> None:
    """Every flag that is set."""
    found = with_app(lambda app: app.steering.flags(), load_app(app_ref))
    if as_json:
        echo_json([f.to_json() for f in found])
    elif not found:
        click.echo("no flags are set")
    else:
        click.echo(
            table(
                ["flag", "value", "set at"],
                [(f.name, _json_text(f.value), when(f.updated_at)) for f in found],
            )
        )


@flags.command("unset")
@app_option
@click.argument("name")
def flag_unset_cmd(app_ref: str | None, name: str) -> None:
    """Remove a flag: workflows read their default again."""
    with_app(lambda app: app.steering.unset_flag(name), load_app(app_ref))
    click.echo(f"{name} unset")
