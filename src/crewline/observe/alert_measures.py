"""What each kind of alert rule measures, read from crewline's own tables in one small query each.

A measure says whether the rule is breached now, with the number it looked at, a sentence for the
person who will be told, and the API path to look at. These are read-only aggregates over tables other
modules own (``model_calls``, ``runs``, ``reviews``, ``memory_searches``), asked of those owners; they never write to them. ``budget`` rules are not
measured here: the budget ledger reports its crossings itself (see :mod:`crewline.observe.alerts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from ..flows.review_requests import oldest_pending
from ..flows.run_store import due_backlog, last_started, stuck_runs
from ..memory.retrieval import SearchWindow, search_window
from ..models.call_log import call_outcomes, cost_split
from ..store import Conn
from .alert_config import WEEK, Rule

__all__ = ["MEASURES", "Measure", "measure"]


@dataclass(frozen=True)
class Measure:
    breached: bool
    value: float
    summary: str
    path: str  # the API path to look at


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _about(rule: Rule) -> str:
    parts = [
        f"model {rule.model}" if rule.model else "",
        f"workflow {rule.workflow}" if rule.workflow else "",
    ]
    return " and ".join(p for p in parts if p) or "all models"


def _calls_path(rule: Rule, status: str | None) -> str:
    query = {"workflow": rule.workflow, "status": status}
    return "/api/v1/calls?" + urlencode({k: v for k, v in query.items() if v})


def _rate(conn: Conn, rule: Rule, now: float, retried: bool, noun: str) -> Measure:
    calls, failed, retries = call_outcomes(conn, now - rule.window, rule.model, rule.workflow)
    hits = retries if retried else failed
    rate = hits / calls if calls else 0.0
    summary = (
        f"{hits} of {calls} model calls for {_about(rule)} {noun} in the last {_ago(rule.window)} "
        f"({rate:.0%}; threshold {rule.threshold:.0%}, at least {rule.min_calls} calls)"
    )
    breached = calls >= rule.min_calls and rate >= rule.threshold
    return Measure(breached, rate, summary, _calls_path(rule, "error" if noun == "failed" else None))


def _error_rate(conn: Conn, rule: Rule, now: float) -> Measure:
    return _rate(conn, rule, now, False, "failed")


def _retry_rate(conn: Conn, rule: Rule, now: float) -> Measure:
    return _rate(conn, rule, now, True, "needed retries")


def _cost_spike(conn: Conn, rule: Rule, now: float) -> Measure:
    start = now - rule.window
    since = start - rule.window * rule.baseline
    current, earlier = cost_split(conn, since, start, rule.model, rule.workflow)
    baseline = earlier / rule.baseline
    ratio = current / baseline if baseline > 0 else 0.0
    summary = (
        f"spend for {_about(rule)} was ${current:.4f} in the last {_ago(rule.window)}, "
        f"{ratio:.1f}x the mean ${baseline:.4f} of the {rule.baseline} windows before (threshold "
        f"{rule.threshold:g}x)"
    )
    path = "/api/v1/spend?" + urlencode({"days": 1, "by": "model"})
    return Measure(baseline > 0 and ratio >= rule.threshold, ratio, summary, path)


def _review_wait(conn: Conn, rule: Rule, now: float) -> Measure:
    row = oldest_pending(conn)
    if row is None:
        return Measure(False, 0.0, "no review is waiting", "/api/v1/reviews")
    waited = max(0.0, now - float(row[1]))
    summary = (
        f"review {row[0]} has waited {_ago(waited)} (limit {_ago(rule.threshold)}); "
        f"{row[2]} review(s) pending"
    )
    return Measure(waited >= rule.threshold, waited, summary, f"/api/v1/reviews/{row[0]}")


def _stuck_runs(conn: Conn, rule: Rule, now: float) -> Measure:
    count, oldest = stuck_runs(conn, now - rule.window, rule.workflow)
    summary = (
        f"{count} run(s) stuck: running with a lease expired, or pending/waiting past their due time, "
        f"by more than {_ago(rule.window)} (threshold {rule.threshold:g})"
        + (f"; oldest {oldest[0]} ({oldest[1]})" if oldest else "")
    )
    path = f"/api/v1/runs/{oldest[0]}" if oldest else "/api/v1/runs?state=running"
    return Measure(count >= max(rule.threshold, 1), float(count), summary, path)


def _queue_backlog(conn: Conn, rule: Rule, now: float) -> Measure:
    depth, earliest = due_backlog(conn, now, rule.queue)
    age = now - earliest if earliest is not None else 0.0
    breached = depth >= max(rule.threshold, 1) or (
        rule.max_age is not None and depth > 0 and age >= rule.max_age
    )
    summary = (
        f"{depth} run(s) due and waiting for a worker on queue {rule.queue or 'any'}, the oldest for "
        f"{_ago(age)} (threshold {rule.threshold:g}"
        + (f", max age {_ago(rule.max_age)})" if rule.max_age is not None else ")")
    )
    return Measure(breached, float(depth), summary, "/api/v1/runs?state=pending")


def _trigger_silent(conn: Conn, rule: Rule, now: float) -> Measure:
    assert rule.workflow is not None
    last = last_started(conn, rule.workflow)
    if last is None:
        return Measure(False, 0.0, f"workflow {rule.workflow} has not started a run yet", "/api/v1/runs")
    silent = max(0.0, now - float(last))
    summary = f"workflow {rule.workflow} last started a run {_ago(silent)} ago (limit {_ago(rule.threshold)})"
    path = "/api/v1/runs?" + urlencode({"workflow": rule.workflow})
    return Measure(silent >= rule.threshold, silent, summary, path)


def _searches(window: SearchWindow) -> str:
    top = window.mean_top_score
    return f"{window.hit_rate:.0%} ({window.with_hits} of {window.searches} searches" + (
        f", mean top score {top:.3f})" if top is not None else ")"
    )


def _retrieval_drop(conn: Conn, rule: Rule, now: float) -> Measure:
    start = now - rule.window
    current = search_window(conn, start, now, rule.scope)
    earlier = search_window(conn, start - WEEK, now - WEEK, rule.scope)
    drop = earlier.hit_rate - current.hit_rate
    enough = min(current.searches, earlier.searches) >= rule.min_calls
    summary = (
        f"memory search hit rate for {f'scopes {rule.scope}*' if rule.scope else 'all scopes'} was "
        f"{_searches(current)} in the last {_ago(rule.window)}, against {_searches(earlier)} in the same "
        f"window a week earlier (threshold: a drop of {rule.threshold:.0%}, at least {rule.min_calls} "
        "searches in each window)"
    )
    path = "/api/v1/stats?" + urlencode({"since": "8d", "by": "day"})
    return Measure(enough and drop > rule.threshold, drop, summary, path)


MEASURES: dict[str, Callable[[Conn, Rule, float], Measure]] = {
    "cost_spike": _cost_spike,
    "error_rate": _error_rate,
    "retry_rate": _retry_rate,
    "review_wait": _review_wait,
    "stuck_runs": _stuck_runs,
    "queue_backlog": _queue_backlog,
    "trigger_silent": _trigger_silent,
    "retrieval_drop": _retrieval_drop,
}


def measure(conn: Conn, rule: Rule, now: float) -> Measure | None:
    """The rule's measure now, or None for rules that are told rather than measured (``budget``)."""
    fn = MEASURES.get(rule.what)
    return None if fn is None else fn(conn, rule, now)
