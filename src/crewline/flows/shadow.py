"""Shadow rollout: a candidate workflow runs beside a live one, on the same input, doing nothing
irreversible (the journal's ``go_live`` holds those calls back and records them).

    [shadow.triage]
    workflow = "triage_v2"    # the registered candidate that runs in shadow beside `triage`
    budget = "$1/day"         # its own daily budget (a ledger scope apart from the live workflow's)
    sample = 0.25             # the share of live runs it shadows, picked by a hash of the run id

Every live trigger (``App.start``, the API, webhooks, cron; the inbox starts runs through them) calls
:func:`shadow_beside` in the transaction that created the live run, so the two are created together or
not at all. ``crewline shadow promote`` switches the versions: from then on the live triggers of the
workflow start the candidate (and no shadow), until it is undone; the switch is a flag
(``shadow.promoted.WORKFLOW``), so every process sees it and ``crewline flags`` shows who and when. This
module parses ``[shadow]``; run rows stay :mod:`.run_store`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..store.database import Conn
from .definitions import parse_money
from .run_store import insert_run
from .switches import delete_flag, get_flag, set_flag

__all__ = [
    "Beside",
    "ShadowPlan",
    "demote",
    "parse_shadow",
    "promote",
    "promoted",
    "sampled",
    "shadow_beside",
    "shadow_problems",
    "spending_as",
]

_KEYS = frozenset({"workflow", "budget", "sample"})


@dataclass(frozen=True)
class ShadowPlan:
    live: str
    candidate: str
    daily_budget: float | None = None
    sample: float = 1.0


def parse_shadow(section: Any) -> dict[str, ShadowPlan]:
    """``[shadow.LIVE]`` tables by live workflow; a bad value names the section and key."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError("[shadow] in crewline.toml must hold tables: [shadow.WORKFLOW] workflow = ...")
    plans: dict[str, ShadowPlan] = {}
    for live, table in section.items():
        where = f"[shadow.{live}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table with workflow = the candidate's name")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigError(f"{where} {unknown[0]}: unknown key; keys: {', '.join(sorted(_KEYS))}")
        candidate = table.get("workflow")
        if not isinstance(candidate, str) or not candidate or candidate == live:
            raise ConfigError(f"{where} workflow must name the candidate workflow (not {live!r} itself)")
        sample = table.get("sample", 1.0)
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
            raise ConfigError(f"{where} sample must be a share between 0 and 1, not {sample!r}")
        try:
            budget = parse_money(table.get("budget"), "/day")
        except ConfigError as e:
            raise ConfigError(f"{where} budget: {e}") from None
        plans[str(live)] = ShadowPlan(str(live), candidate, budget, float(sample))
    return plans


def shadow_problems(section: Any) -> list[str]:
    """Every section's problem, one each (for ``crewline config check``)."""
    tables = section.items() if isinstance(section, Mapping) else [(None, section)]
    problems = []
    for name, table in tables:
        try:
            parse_shadow(table if name is None else {name: table})
        except ConfigError as e:
            problems.append(str(e))
    return problems


def sampled(run_id: str, share: float) -> bool:
    """Whether live run ``run_id`` is shadowed: the same answer in every process, for every retry."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % 10_000 < round(share * 10_000)


@dataclass(frozen=True)
class Beside:
    """A live run just created, and what a shadow of it needs."""

    plan: ShadowPlan
    run_id: str
    input_json: bytes
    version: str | None
    queue: str
    blob_threshold: int


def shadow_beside(conn: Conn, beside: Beside) -> str | None:
    """Create the shadow run of a newly created live run (when sampled); returns its id."""
    if not sampled(beside.run_id, beside.plan.sample):
        return None
    shadow_id, _ = insert_run(
        conn,
        run_id=f"{beside.run_id}~shadow",
        workflow=beside.plan.candidate,
        version=beside.version,
        queue=beside.queue,
        priority=-1,  # the live run goes first
        input_json=beside.input_json,
        blob_threshold=beside.blob_threshold,
        shadow=True,
        shadow_of=beside.run_id,
    )
    return shadow_id


def _flag(live: str) -> str:
    return f"shadow.promoted.{live}"


def promoted(conn: Conn, plan: ShadowPlan) -> bool:
    """Whether the candidate of ``plan`` serves the live workflow's triggers now."""
    flag = get_flag(conn, _flag(plan.live))
    return flag is not None and isinstance(flag.value, dict) and flag.value.get("live") == plan.candidate


def promote(conn: Conn, plan: ShadowPlan, by: str, at: float) -> None:
    set_flag(conn, _flag(plan.live), {"live": plan.candidate, "by": by, "at": at})


def demote(conn: Conn, plan: ShadowPlan) -> bool:
    """Give the live workflow its triggers back; False when it was not promoted."""
    return delete_flag(conn, _flag(plan.live))


def spending_as(workflow: str, shadow: bool) -> str:
    """The workflow a run's model calls are accounted to, and its run and step events are labelled with: a
    shadow run's as ``WORKFLOW~shadow``, so its spend has a ledger scope (and budget) of its own and costs,
    call records, metrics and traces show it apart."""
    return f"{workflow}~shadow" if shadow else workflow
