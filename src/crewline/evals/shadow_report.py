"""How a shadow candidate compares with the live workflow on the same inputs (``crewline shadow report``).

For every live run with a finished shadow beside it: whether their outputs agree, field by field for
object outputs (the whole output otherwise), what each cost in model calls, and how long each took. The
report gives the agreement per field, the share of pairs that agree entirely, and the mean cost and
duration deltas (shadow minus live), with the "would have done" calls the shadow held back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..flows.run_records import RunRecord
from ..flows.run_store import shadow_pairs
from ..flows.step_store import load_steps
from .runner import run_cost

if TYPE_CHECKING:
    from ..store import Conn

__all__ = ["ShadowReport", "shadow_report"]

_WHOLE = "(output)"


@dataclass
class ShadowReport:
    workflow: str
    candidate: str | None = None
    pairs: int = 0  # both finished
    unfinished: int = 0  # a pair where either run has not finished yet
    agreement: float = 0.0  # pairs whose outputs agree entirely
    fields: dict[str, float] = field(default_factory=dict)  # agreement per output field
    cost_live: float = 0.0
    cost_shadow: float = 0.0
    seconds_live: float = 0.0  # mean run duration
    seconds_shadow: float = 0.0
    held_back: dict[str, int] = field(default_factory=dict)  # "would have done" calls by name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fields(output: Any) -> dict[str, Any]:
    return {str(k): v for k, v in output.items()} if isinstance(output, dict) else {_WHOLE: output}


def _seconds(run: RunRecord) -> float:
    return max(0.0, (run.finished_at or run.updated_at) - run.created_at)


def shadow_report(conn: Conn, workflow: str, since: float) -> ShadowReport:
    report = ShadowReport(workflow)
    agree: dict[str, list[bool]] = defaultdict(list)
    whole: list[bool] = []
    done = ("completed", "failed", "cancelled")
    for live, shadow in shadow_pairs(conn, workflow, since):
        report.candidate = shadow.workflow
        if live.status not in done or shadow.status not in done:
            report.unfinished += 1
            continue
        report.pairs += 1
        a, b = _fields(live.output), _fields(shadow.output)
        same = {k: a.get(k) == b.get(k) for k in set(a) | set(b)}
        for k, ok in same.items():
            agree[k].append(ok)
        whole.append(all(same.values()) and live.status == shadow.status)
        report.cost_live += run_cost(conn, live.id)
        report.cost_shadow += run_cost(conn, shadow.id)
        report.seconds_live += _seconds(live)
        report.seconds_shadow += _seconds(shadow)
        for step in load_steps(conn, shadow.id).values():
            if step.shadowed is not None:
                name = str(step.shadowed.get("name"))
                report.held_back[name] = report.held_back.get(name, 0) + 1
    if report.pairs:
        report.agreement = sum(whole) / report.pairs
        report.fields = {k: sum(v) / len(v) for k, v in sorted(agree.items())}
        report.seconds_live /= report.pairs
        report.seconds_shadow /= report.pairs
    return report
