"""``crewline shadow report WORKFLOW``: how its shadow candidate compares with it on the same inputs;
``crewline shadow promote WORKFLOW``: the candidate takes the live triggers (``--undo`` gives them back)."""

from __future__ import annotations

import time

import click

from ..config import parse_duration
from ..errors import InvalidInput
from ..evals.shadow_report import ShadowReport, shadow_report
from ..flows.shadow import demote, parse_shadow, promote
from ._common import app_option, echo_json, errors_as_exit, fail, load_app, table, user

__all__ = ["shadow"]


@click.group()
def shadow() -> None:
    """Shadow runs: a candidate workflow beside a live one ([shadow.WORKFLOW] in crewline.toml)."""


@shadow.command("report")
@click.argument("workflow")
@click.option("--since", default="7d", show_default=True, help="How far back: 24h, 7d, 4w.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@app_option
def report_cmd(workflow: str, since: str, as_json: bool, app_ref: str | None) -> None:
    """Agreement per output field between WORKFLOW's live runs and their shadows; cost and time deltas."""
    with errors_as_exit():
        start = time.time() - parse_duration(since)
    app = load_app(app_ref)
    try:
        with errors_as_exit():
            found = app.db.query(lambda conn: shadow_report(conn, workflow, start))
    finally:
        app.close()
    if as_json:
        echo_json(found.to_json())
        return
    _print(found)


def _print(r: ShadowReport) -> None:
    if r.candidate is None:
        click.echo(f"no shadow runs beside {r.workflow} in this period: configure [shadow.{r.workflow}]")
        return
    click.echo(f"{r.candidate} in shadow of {r.workflow}: {r.pairs} pairs finished, {r.unfinished} not yet")
    click.echo(f"outputs agree entirely: {r.agreement:.0%}")
    click.echo(table(["field", "agreement"], [(k, f"{v:.0%}") for k, v in r.fields.items()]))
    click.echo(
        f"cost: live ${r.cost_live:.4f}, shadow ${r.cost_shadow:.4f} ({r.cost_shadow - r.cost_live:+.4f}); "
        f"mean duration: live {r.seconds_live:.2f}s, shadow {r.seconds_shadow:.2f}s"
    )
    for name, count in sorted(r.held_back.items()):
        click.echo(f"held back (would have done): {name} x{count}")


@shadow.command("promote")
@click.argument("workflow")
@click.option("--undo", is_flag=True, help="Give WORKFLOW its live triggers back.")
@click.option("--force", is_flag=True, help="Promote without any finished shadow run to compare.")
@app_option
def promote_cmd(workflow: str, undo: bool, force: bool, app_ref: str | None) -> None:
    """Switch the versions: WORKFLOW's live triggers start its [shadow] candidate from now on."""
    app = load_app(app_ref)
    try:
        with errors_as_exit():
            plans = parse_shadow(app.settings.sections.get("shadow"))
            plan = plans.get(workflow)
            if plan is None:
                raise InvalidInput(f"no [shadow.{workflow}] in crewline.toml: nothing to promote")
            if undo:
                if not app.db.run(lambda conn: demote(conn, plan)):
                    fail(f"{plan.candidate} was not promoted over {workflow}")
                click.echo(f"{workflow} serves its live triggers again; {plan.candidate} runs in shadow")
                return
            found = app.db.query(lambda conn: shadow_report(conn, workflow, 0.0))
            if found.pairs == 0 and not force:
                fail(f"no finished shadow run of {plan.candidate} to compare yet; wait, or --force")
            app.db.run(lambda conn: promote(conn, plan, user(), time.time()))
    finally:
        app.close()
    click.echo(
        f"{plan.candidate} now serves {workflow}'s live triggers (agreement so far {found.agreement:.0%} "
        f"over {found.pairs} runs); `crewline shadow promote {workflow} --undo` switches back"
    )
