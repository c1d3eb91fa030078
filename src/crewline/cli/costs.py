"""``crewline costs``: model spend by day, model and workflow, from the call records; budgets and their use."""

from __future__ import annotations

import time
from typing import Any

import click

from ..models import reports
from ..models.config import BudgetConfig, ModelsConfig
from ..server.keys import list_keys
from ..store import Conn, Database
from ._common import echo_json, errors_as_exit, load_settings, note_database, table

__all__ = ["costs"]

_GROUPS = reports.GROUPS


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="How many days back.")
@click.option(
    "--by",
    "groups",
    type=click.Choice(sorted(_GROUPS)),
    multiple=True,
    help="Group by day, model, workflow and/or key (the API key of proxy calls, with its name; repeatable; "
    "default: day, model and workflow in turn).",
)
@click.option("--run", "run_id", help="Only the calls of this run.")
@click.option("--budgets", "show_budgets", is_flag=True, help="Also show budgets: limit, spent, reserved.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def costs(days: int, groups: tuple[str, ...], run_id: str | None, show_budgets: bool, as_json: bool) -> None:
    """Model spend by day, model, workflow or API key (calls with an unknown price are counted apart, never as $0)."""
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        budgets = ModelsConfig.parse(settings.sections.get("models")).budgets
        database = Database(settings.database_url)
    since = time.time() - days * 86400
    try:
        with errors_as_exit():
            report = database.query(
                lambda conn: _report(
                    conn,
                    groups or ("day", "model", "workflow"),
                    since,
                    run_id,
                    budgets if show_budgets else None,
                )
            )
    finally:
        database.close()
    if as_json:
        echo_json(report)
        return
    _print(report, days)


def _report(
    conn: Conn, groups: tuple[str, ...], since: float, run_id: str | None, budgets: BudgetConfig | None
) -> dict[str, Any]:
    out = reports.spend(conn, groups, since, run_id)
    if "key" in out:
        names = {k.id: k.name for k in list_keys(conn)}
        out["key"] = [{**row, "name": names.get(row["key"]) or None} for row in out["key"]]
    if budgets is not None:
        out["budgets"] = reports.budgets(conn, budgets)
    return out


def _print(report: dict[str, Any], days: int) -> None:
    for group, rows in report.items():
        if group == "budgets":
            click.echo("\nbudgets")
            click.echo(table(["scope", "limit", "spent", "reserved", "used"], [_budget_row(b) for b in rows]))
            continue
        click.echo(f"\nspend by {group}, last {days} days")
        if not rows:
            click.echo("(no model calls)")
            continue
        cells = [_spend_row(group, r) for r in rows]
        total = sum(r["cost"] for r in rows)
        cells.append(("total", sum(r["calls"] for r in rows), "", "", "", "", _usd(total)))
        headers = [group, "calls", "cache hits", "errors", "tokens in", "tokens out", "cost"]
        click.echo(table(headers, cells))


def _spend_row(group: str, r: dict[str, Any]) -> tuple[Any, ...]:
    cost = _usd(r["cost"]) + (f" (+{r['unpriced_calls']} unpriced)" if r["unpriced_calls"] else "")
    label = f"{r['name']} ({r['key']})" if group == "key" and r.get("name") else r[group]
    return (label, r["calls"], r["cache_hits"], r["errors"], r["input_tokens"], r["output_tokens"], cost)


def _budget_row(b: dict[str, Any]) -> tuple[Any, ...]:
    used = "-" if not b["limit"] else f"{100 * b['spent'] / b['limit']:.0f}%"
    return (b["scope"], _usd(b["limit"]), _usd(b["spent"]), _usd(b["reserved"]), used)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"
