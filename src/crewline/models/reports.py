"""Reading the call records and budgets back: spend by day, model and workflow; recent calls; budgets.

The CLI (``crewline costs``) and the HTTP API (``/api/v1/spend``, ``/calls``, ``/budgets``) both read here;
the SQL is that of the tables' owners (:mod:`.records`, :mod:`.ledger`).
"""

from __future__ import annotations

from typing import Any

from ..store import Conn
from .config import BudgetConfig
from .ledger import budget_rows, config_limit, from_nusd
from .records import GROUPS, call_rows, spend_rows

__all__ = ["GROUPS", "budgets", "calls", "spend"]


def spend(conn: Conn, groups: tuple[str, ...], since: float, run_id: str | None = None) -> dict[str, Any]:
    """Calls, errors, tokens and cost per group since ``since``; unpriced calls are counted apart."""
    out: dict[str, Any] = {}
    for group in groups:
        rows = spend_rows(conn, group, since, run_id)
        out[group] = [
            {group: r[0] or "-", "calls": r[1], "cache_hits": r[2] or 0, "errors": r[3] or 0,
             "input_tokens": r[4] or 0, "output_tokens": r[5] or 0, "cost": round(float(r[6] or 0), 6),
             "unpriced_calls": r[7] or 0}
            for r in rows
        ]  # fmt: skip
    return out


def budgets(conn: Conn, config: BudgetConfig) -> list[dict[str, Any]]:
    """Every budget scope seen: its limit (stored, else configured), what is spent and reserved."""
    rows = budget_rows(conn)
    return [
        {"scope": s, "limit": config_limit(config, s) if lim is None else from_nusd(lim), "spent": from_nusd(sp),
         "reserved": from_nusd(res)}
        for s, lim, sp, res in rows
    ]  # fmt: skip


def calls(
    conn: Conn,
    *,
    run_id: str | None = None,
    workflow: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Recent call records, newest first (``before_id`` pages back); payloads are not included."""
    out = call_rows(conn, run_id=run_id, workflow=workflow, status=status, before_id=before_id, limit=limit)
    for row in out:
        row["price_known"], row["cache_hit"] = bool(row["price_known"]), bool(row["cache_hit"])
    return out
