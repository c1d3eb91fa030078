"""The figures of an evaluation and its verdict against a baseline.

Scores are averaged per case first (over repeats), then over cases: repeats measure the same case again,
they are not new cases, so the confidence interval is over cases. The 95% interval is a percentile
bootstrap over the per-case means (2,000 resamples, fixed seed so a stored result reads the same every
time): scores are bounded in [0, 1] and often all-or-nothing, where a normal-theory interval would reach
past 1 or collapse to nothing on small datasets.

The verdict against a baseline is a two-sided exact sign test on the cases both runs scored: for each
case, did the candidate score higher, lower or the same (ties are dropped)? It assumes nothing about the
distribution of score differences (a paired t-test would assume them roughly normal, which 0/1 scores are
not), is exact for the small datasets an operator writes by hand, and pairs each case with itself, so easy
and hard cases do not blur the comparison. ``improved`` or ``regressed`` at p < 0.05, else
``inconclusive``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import InvalidInput
from .results import CaseResult, case_results, get_run

if TYPE_CHECKING:
    from ..store import Database

__all__ = [
    "ALPHA",
    "Comparison",
    "Verdict",
    "case_means",
    "compare",
    "compare_runs",
    "sign_test",
    "summarize",
]

Verdict = Literal["improved", "regressed", "inconclusive"]
ALPHA = 0.05
_RESAMPLES = 2000


def _score(result: CaseResult, scorer: str) -> float:
    """A case a scorer could not score (the target or the scorer failed) scores 0 there: not a pass."""
    if scorer not in result.scores:
        return 0.0
    return float(result.scores[scorer].get("value", 0.0))


def case_means(results: Sequence[CaseResult], scorers: Sequence[str]) -> dict[str, float]:
    """Each case's score: its mean over repeats and scorers."""
    per: dict[str, list[float]] = defaultdict(list)
    for r in results:
        per[r.case_id].extend(_score(r, s) for s in scorers)
    return {case: sum(v) / len(v) for case, v in per.items() if v}


def interval(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 1 or float(data.min()) == float(data.max()):
        return (float(data.mean()), float(data.mean()))
    rng = np.random.default_rng(0)
    means = data[rng.integers(0, len(data), size=(_RESAMPLES, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def summarize(results: Sequence[CaseResult], scorers: Sequence[str]) -> dict[str, Any]:
    """Per scorer: mean and 95% interval over cases, pass rate, per-field accuracy; per case: pass rate
    over repeats; cost; latency p50/p95; how many case runs errored."""
    by_case: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_case[r.case_id].append(r)
    table: dict[str, Any] = {}
    for s in scorers:
        per_case = [sum(_score(r, s) for r in rs) / len(rs) for rs in by_case.values()]
        passes = [bool(r.scores.get(s, {}).get("passed")) for r in results]
        low, high = interval(per_case)
        table[s] = {
            "mean": sum(per_case) / len(per_case) if per_case else 0.0,
            "ci_low": low,
            "ci_high": high,
            "pass_rate": sum(passes) / len(passes) if passes else 0.0,
            "fields": _field_accuracy(results, s),
        }
    cases = {
        case: sum(r.error is None and all(r.scores.get(s, {}).get("passed") for s in scorers) for r in rs)
        / len(rs)
        for case, rs in sorted(by_case.items())
    }
    latencies = [r.latency_ms for r in results if r.error is None]
    return {
        "scorers": table,
        "case_pass_rate": cases,
        "cases": len(by_case),
        "runs": len(results),
        "errored": sum(r.error is not None for r in results),
        "cost": sum(r.cost for r in results),
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
    }


def _field_accuracy(results: Sequence[CaseResult], scorer: str) -> dict[str, float]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        for name, ok in (r.scores.get(scorer, {}).get("fields") or {}).items():
            counts[name][0] += int(bool(ok))
            counts[name][1] += 1
    return {name: right / total for name, (right, total) in sorted(counts.items())}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact p-value of ``wins`` against ``losses`` under "either is as likely" (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * float(tail))


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    p_value: float
    wins: int
    losses: int
    ties: int
    paired: int  # cases both runs scored
    delta: float  # candidate mean minus baseline mean, over the paired cases

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(candidate: Mapping[str, float], baseline: Mapping[str, float]) -> Comparison:
    """The verdict of ``candidate`` against ``baseline``, each a map of case id to the case's score."""
    both = sorted(set(candidate) & set(baseline))
    wins = sum(candidate[c] > baseline[c] + 1e-9 for c in both)
    losses = sum(candidate[c] < baseline[c] - 1e-9 for c in both)
    p = sign_test(wins, losses)
    verdict: Verdict = "inconclusive"
    if p < ALPHA:
        verdict = "improved" if wins > losses else "regressed"
    delta = sum(candidate[c] - baseline[c] for c in both) / len(both) if both else 0.0
    return Comparison(verdict, p, wins, losses, len(both) - wins - losses, len(both), delta)


def compare_runs(db: Database, a: str, b: str) -> dict[str, Any]:
    """Evaluation ``b`` against evaluation ``a``, on the cases and scorers both have."""
    first, second = get_run(db, a), get_run(db, b)
    scorers = [s for s in second.plan["scorers"] if s in first.plan["scorers"]]
    if not scorers:
        raise InvalidInput(f"{a} and {b} share no scorer: nothing to compare")
    got = compare(case_means(case_results(db, b), scorers), case_means(case_results(db, a), scorers))
    out: dict[str, Any] = {"a": a, "b": b, "scorers": scorers, **got.to_json()}
    if first.dataset_version != second.dataset_version:
        out["note"] = "the two ran on different versions of the dataset: only shared cases are compared"
    return out
