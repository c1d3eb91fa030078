"""``/costs``: what the models cost over a chosen number of days, by model, workflow, key and day, and
every budget with its use. The figures are those of ``crewline costs`` and ``/api/v1/spend`` and
``/budgets`` (:mod:`crewline.models.reports`), read the same way.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ...models import reports
from ...models.config import ModelsConfig
from ...server.keys import list_keys
from ..web import NavEntry, Viewer, console_of, page, render

__all__ = ["NAV", "router"]

NAV = (NavEntry(40, "Costs", "/costs", "read spend"),)
GROUPS = ("model", "workflow", "key", "day")
_DAYS = (1, 7, 30, 90)

router = APIRouter(include_in_schema=False)


def _days(text: str, problems: list[str]) -> int:
    if not text:
        return 7
    if text.isdigit() and 1 <= int(text) <= 366:
        return int(text)
    problems.append(f"{text!r} is not a number of days from 1 to 366; showing the last 7 days.")
    return 7


@router.get("/costs")
async def costs(request: Request, days: str = "", who: Viewer = Depends(page("read spend"))) -> HTMLResponse:
    problems: list[str] = []
    span = _days(days.strip(), problems)
    app = console_of(request).server.app
    config = ModelsConfig.parse(app.settings.sections.get("models")).budgets
    since = time.time() - span * 86400

    def read(conn: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        names = {k.id: k.name for k in list_keys(conn)}
        return reports.spend(conn, GROUPS, since), reports.budgets(conn, config), names

    spend, budgets, names = await app.db.read(read)
    for row in spend["key"]:
        row["name"] = names.get(str(row["key"]), "")
    shown = [b for b in budgets if not str(b["scope"]).startswith("run:")]
    context = {
        "days": span,
        "choices": _DAYS,
        "problems": problems,
        "spend": spend,
        "groups": GROUPS,
        "total": sum(row["cost"] for row in spend["day"]),
        "calls": sum(row["calls"] for row in spend["day"]),
        "budgets": shown,
        "run_budgets": len(budgets) - len(shown),
    }
    return render(request, "costs.html", context, who=who, status=400 if problems else 200)
