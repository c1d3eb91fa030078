"""Reading the call records and budgets back: spend by day, model, workflow and key; recent calls; budgets.

The CLI (``crewline costs``) and the HTTP API (``/api/v1/spend``, ``/calls``, ``/budgets``) both read here;
the SQL is that of the tables' owners (:mod:`.call_log`, :mod:`.ledger`).
"""

from __future__ import annotations

from typing import Any

from ..store import Conn
from .call_log import GROUPS, spend_rows, usage_rows
from .config import BudgetConfig
from .ledger import budget_rows, config_limit, from_nusd

__all__ = ["GROUPS", "budgets", "spend", "usage_by_run", "usage_by_step"]


def spend(conn: Conn, groups: tuple[str, ...], since: float, run_id: str | None = None) -> dict[str, Any]:
    """Calls, errors, tokens and cost per group since ``since``; unpriced calls are counted apart. Closed
    hours come from the call log's hourly rollups, so a month costs about what a day does."""
    out: dict[str, Any] = {}
    for group, rows in spend_rows(conn, groups, since, run_id).items():
        out[group] = [
            {
                group: r[0] or "-",
                "calls": r[1],
                "cache_hits": r[2] or 0,
                "errors": r[3] or 0,
                "input_tokens": r[4] or 0,
                "output_tokens": r[5] or 0,
                "cost": round(float(r[6] or 0), 6),
                "unpriced_calls": r[7] or 0,
            }
            for r in rows
        ]
    if "key" in out:
        out["key"] = _by_key_id(out["key"])
    return out


def _by_key_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key: a key with a daily budget is recorded under its day's ledger scope, ``<id>@<day>``."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        key_id = str(row["key"]).partition("@")[0]
        into = merged.setdefault(key_id, {**row, "key": key_id, **dict.fromkeys(_SUMMED, 0)})
        for name in _SUMMED:
            into[name] += row[name]
        into["cost"] = round(into["cost"], 6)
    return [merged[k] for k in sorted(merged)]


_SUMMED = ("calls", "cache_hits", "errors", "input_tokens", "output_tokens", "cost", "unpriced_calls")


def budgets(conn: Conn, config: BudgetConfig) -> list[dict[str, Any]]:
    """Every budget scope seen: its limit (stored, else configured), what is spent and reserved."""
    rows = budget_rows(conn)
    return [
        {
            "scope": s,
            "limit": config_limit(config, s) if lim is None else from_nusd(lim),
            "spent": from_nusd(sp),
            "reserved": from_nusd(res),
        }
        for s, lim, sp, res in rows
    ]


def _usage(row: tuple[Any, ...]) -> dict[str, Any]:
    calls_, tokens_in, tokens_out, cost, unpriced = row
    return {
        "calls": calls_,
        "input_tokens": tokens_in or 0,
        "output_tokens": tokens_out or 0,
        "cost": round(float(cost or 0), 6),
        "unpriced_calls": unpriced or 0,
    }


def usage_by_run(conn: Conn, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Model calls, tokens and cost of each run (every call it made: retries, fallbacks, failures)."""
    return {r[0]: _usage(r[1:]) for r in usage_rows(conn, run_ids=run_ids)}


def usage_by_step(conn: Conn, run_id: str, steps: tuple[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """Model calls, tokens and cost of each step of a run (of its steps ``first..last`` with ``steps``)."""
    rows = usage_rows(conn, run_id=run_id, steps=steps)
    return {int(r[0]): _usage(r[1:]) for r in rows if r[0] is not None}
