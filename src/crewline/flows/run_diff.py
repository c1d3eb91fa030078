"""Where two runs' steps differ (a fork against its original, a rerun against the first attempt): the
comparison behind `crewline runs diff` and the console's run diff, written once.
"""

from __future__ import annotations

from typing import Any

from .step_store import StepRecord

__all__ = ["diff_verdict", "error_text", "outcome", "step_diff"]


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    where = f" (step {error['step']})" if error.get("step") is not None else ""
    return f"{error.get('type')}: {error.get('message')}{where}"


def outcome(step: StepRecord | None) -> Any:
    """What a step produced, for comparing runs: the answer and who gave it, not the bookkeeping."""
    if step is None:
        return None
    if step.error:
        return {"error": error_text(step.error)}
    out = step.output
    if step.kind == "llm" and isinstance(out, dict):
        # A structured reply's text is its output as JSON: comparing both would show each change twice.
        answer = ("output",) if out.get("output") is not None else ("text",)
        return {k: out.get(k) for k in ("model", "prompt", *answer)}
    return out


def step_diff(a: list[StepRecord], b: list[StepRecord]) -> list[dict[str, Any]]:
    """Per step number: its name, whether the outcomes are the same, both outcomes, the fields that differ."""
    by_a, by_b = {s.step_no: s for s in a}, {s.step_no: s for s in b}
    rows = []
    for n in sorted(set(by_a) | set(by_b)):
        sa, sb = by_a.get(n), by_b.get(n)
        va, vb = outcome(sa), outcome(sb)
        either = sa if sa is not None else sb
        assert either is not None
        fields = None
        if isinstance(va, dict) and isinstance(vb, dict):
            fields = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
        rows.append(
            {
                "step": n,
                "name": either.name,
                "kind": either.kind,
                "in_a": sa is not None,
                "in_b": sb is not None,
                "same": va == vb,
                "fields": fields,
                "a": va,
                "b": vb,
            }
        )
    return rows


def diff_verdict(row: dict[str, Any]) -> str:
    if not row["in_a"]:
        return "only in B"
    if not row["in_b"]:
        return "only in A"
    return "same" if row["same"] else "differs"
