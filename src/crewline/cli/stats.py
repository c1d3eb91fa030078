"""``crewline stats``: what the AI did, what it cost, what failed and why, and how long reviews took."""

from __future__ import annotations

from typing import Any

import click

from ..observe.reports import BY, DEFAULT_SINCE, parse_query, prepare
from ..observe.reports import stats as compute
from ..store import Database
from ._common import echo_json, errors_as_exit, load_settings, note_database, table

__all__ = ["stats"]

_CALL_HEADERS = [
    "calls",
    "cost",
    "per run",
    "errors",
    "retried",
    "cached",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "ttft p50",
]


@click.command()
@click.option(
    "--since",
    default=DEFAULT_SINCE,
    show_default=True,
    help="How far back: a number with m, h, d or w (30m, 24h, 7d, 4w).",
)
@click.option("--by", help=f"Also break the model calls down by one of: {', '.join(BY)}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as GET /api/v1/stats).")
def stats(since: str, by: str | None, as_json: bool) -> None:
    """Model calls (cost, latency percentiles, errors by class, retries, cache hits), runs by state and
    throughput, queue depth, review waiting times and memory retrieval hit rate, from the database."""
    settings = load_settings()
    note_database(settings)
    with errors_as_exit():
        query = parse_query(since, by)
        database = Database(settings.database_url)
    try:
        with errors_as_exit():
            prepare(database, query)
            report = database.query(lambda conn: compute(conn, query))
    finally:
        database.close()
    if as_json:
        echo_json(report)
        return
    _print(report, since)


def _print(report: dict[str, Any], since: str) -> None:
    click.echo(f"model calls, last {since}")
    rows = [("all", *_call_cells(report["calls"]))]
    by = report["by"]
    rows += [(g[by], *_call_cells(g)) for g in report.get("groups", [])]
    click.echo(table([by or "", *_CALL_HEADERS], rows))
    if report["percentiles"] == "histogram":
        click.echo("(percentiles from hourly histograms, within 1%; runs estimated, standard error 1.6%)")
    errors = report["calls"]["errors_by_class"]
    if errors:
        click.echo("\nerrors by class")
        click.echo(
            table(
                ["class", "calls", "share of calls"],
                [(c, e["calls"], _pct(e["rate"])) for c, e in errors.items()],
            )
        )
    runs = report["runs"]
    states = ", ".join(f"{s} {n}" for s, n in runs["by_state"].items()) or "none"
    click.echo(f"\nruns started: {states}")
    click.echo(f"runs completed: {runs['completed']} ({runs['completed_per_hour']}/hour)")
    depth = ", ".join(f"{q} {n}" for q, n in runs["queue_depth"].items()) or "empty"
    click.echo(f"queued now: {depth}")
    r = report["reviews"]
    click.echo(
        f"\nreviews pending: {r['pending']} (longest wait {_secs(r['longest_wait_s'])}); decided: {r['decided']} "
        f"(time to decision p50 {_secs(r['decision_p50_s'])}, p95 {_secs(r['decision_p95_s'])})"
    )
    _print_retrieval(report["retrieval"])


def _print_retrieval(m: dict[str, Any]) -> None:
    click.echo(
        f"\nmemory searches: {m['searches']}, with a hit {_pct(m['hit_rate'])}, mean top score {m['mean_top_score'] or '-'}"
    )
    if m["series"]:
        period = "hour" if "hour" in m["series"][0] else "day"
        cells = [
            (s[period], s["searches"], _pct(s["hit_rate"]), s["mean_top_score"] or "-") for s in m["series"]
        ]
        click.echo(table([period, "searches", "with a hit", "mean top score"], cells))


def _call_cells(c: dict[str, Any]) -> tuple[Any, ...]:
    lat, ttft = c["latency_ms"], c["ttft_ms"]
    cost = f"${c['cost'] or 0:.4f}" + (f" (+{c['unpriced_calls']} unpriced)" if c["unpriced_calls"] else "")
    per_run = "-" if c["cost_per_run"] is None else f"${c['cost_per_run']:.4f}"
    return (
        c["calls"],
        cost,
        per_run,
        f"{c['errors']} ({_pct(c['error_rate'])})",
        _pct(c["retry_rate"]),
        _pct(c["cache_hit_rate"]),
        *(_num(lat[p]) for p in ("p50", "p95", "p99")),
        _num(ttft["p50"]),
    )


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return (
        f"{value:.0f}s" if value < 120 else f"{value / 60:.0f}m" if value < 7200 else f"{value / 3600:.1f}h"
    )
