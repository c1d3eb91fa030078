"""``/alerts``: the rules of ``[alerts]`` with whether each fires now, and the history of episodes and
budget crossings with how their notices fared (as ``crewline alerts list`` and ``history``)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...errors import ConfigError
from ...observe.alert_config import RULE_KINDS, Rule
from ...observe.alerts import list_history, rule_states
from ..web import NavEntry, Viewer, console_of, page, render
from ._formats import FMT

__all__ = ["NAV", "router"]

NAV = (NavEntry(80, "Alerts", "/alerts", "read alerts"),)

router = APIRouter(include_in_schema=False)

_HISTORY = 100


@dataclass(frozen=True)
class RuleRow:
    rule: Rule
    meaning: str
    firing: bool
    since: float | None
    value: float | None


@router.get("/alerts")
async def alerts(request: Request, who: Viewer = Depends(page("read alerts"))) -> Response:
    app = console_of(request).server.app
    states = await app.db.read(rule_states)
    history = await app.db.read(lambda conn: list_history(conn, limit=_HISTORY))
    problem = None
    rows: list[RuleRow] = []
    try:
        rules = app.alerting.config.rules
    except ConfigError as e:  # the history still shows; the page says what to fix
        problem = f"The [alerts] section of crewline.toml has a mistake, so its rules are not shown: {e}"
        rules = {}
    for name, rule in rules.items():
        firing, since, value = states.get(name, (False, None, None))
        rows.append(
            RuleRow(rule, RULE_KINDS.get(rule.what, ""), firing and rule.what != "budget", since, value)
        )
    context = {
        "rules": rows,
        "firing": [r for r in rows if r.firing],
        "history": history,
        "limit": _HISTORY,
        "kinds": RULE_KINDS,
        "problem": problem,
        "fmt": FMT,
    }
    return render(request, "alerts.html", context, who=who)
