"""How `crewline runs` shows runs to a person: money, tokens and durations, one step in full, and where
two runs' steps differ.

The table views stay one line a step; the whole of a step (its input, output, error, model and cost)
is one command away (`runs show RUN --step N`), and a diff prints the lines that differ in full instead of
two truncated cells that can look the same.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from ..flows.run_diff import diff_verdict, error_text, step_diff
from ..flows.run_records import RunRecord
from ..flows.step_store import StepRecord
from ._common import when
from ._render import render

__all__ = [
    "diff_blocks",
    "diff_verdict",
    "error_text",
    "money",
    "run_seconds",
    "span",
    "step_detail",
    "step_diff",
    "tokens",
    "usage_line",
]


def money(usage: dict[str, Any] | None) -> str:
    if not usage:
        return "-"
    unpriced = " (+unpriced)" if usage.get("unpriced_calls") else ""
    return f"${usage['cost']:.6f}{unpriced}"


def tokens(usage: dict[str, Any] | None) -> str:
    return "-" if not usage else str(usage["input_tokens"] + usage["output_tokens"])


def span(seconds: float | None) -> str:
    """A duration as people read it: 850ms, 4.2s, 3m05s, 2h10m, 3d04h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_seconds(run: RunRecord) -> float | None:
    return None if run.finished_at is None else run.finished_at - run.created_at


def usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return "- (no model calls)"
    n = usage["calls"]
    return (
        f"{money(usage)} ({n} model call{'s' if n != 1 else ''}, {usage['input_tokens']} tokens in, "
        f"{usage['output_tokens']} out)"
    )


def step_detail(
    run_id: str, step: StepRecord, usage: dict[str, Any] | None, calls: list[dict[str, Any]]
) -> list[str]:
    """Everything recorded about one step, nothing cut."""
    seconds = None if step.finished_at is None else step.finished_at - step.started_at
    lines = [
        f'step      {step.step_no} of run {run_id}: {step.kind} "{step.name}" (effect {step.effect}, status '
        f"{step.status}, tries {step.attempts})",
        f"started   {when(step.started_at)}",
        f"finished  {when(step.finished_at)}",
        f"duration  {span(seconds)}",
    ]
    lines += _model_lines(step, usage)
    for label, value in (("input", step.input), ("output", step.output)):
        if value is not None or label == "output":
            lines += [f"{label}:", *render(value)]
    if step.error:
        lines += ["error:", *render(step.error)]
    if calls:
        lines.append("model calls:")
        lines += [f"  {_call_line(c)}" for c in calls]
    return lines


def _model_lines(step: StepRecord, usage: dict[str, Any] | None) -> list[str]:
    record = step.output if step.kind == "llm" and isinstance(step.output, dict) else {}
    lines = []
    if record.get("model"):
        asked = step.input.get("model") if isinstance(step.input, dict) else None
        model = f"{record.get('provider')}/{record['model']}" if record.get("provider") else record["model"]
        lines.append(f"model     {model}" + (f" (asked for {asked})" if asked else ""))
    if record.get("prompt"):
        lines.append(f"prompt    {record['prompt']}")
    if usage:
        lines.append(f"tokens    {usage['input_tokens']} in, {usage['output_tokens']} out")
        lines.append(f"cost      {money(usage)}")
    if isinstance(record.get("cut"), dict):
        lines.append(f"cut       {_cut_line(record['cut'])}")
    return lines


def _cut_line(cut: dict[str, Any]) -> str:
    """What fitting the request into the window took out (the whole record is in the output below)."""
    parts = [
        f"{m['chars_cut']} characters (~{m['tokens_cut']} tokens) from message {m['index'] + 1} ({m['role']})"
        for m in cut.get("messages", [])
    ]
    if cut.get("memory_dropped"):
        parts.append(f"{len(cut['memory_dropped'])} memory hits (lowest scores)")
    return (
        f"{cut.get('policy')}: {'; '.join(parts) or 'nothing'} to fit a window of {cut.get('window')} tokens "
        f"(~{cut.get('estimated_tokens_before')} -> ~{cut.get('estimated_tokens_after')})"
    )


def _call_line(c: dict[str, Any]) -> str:
    latency = "-" if c.get("latency_ms") is None else span(c["latency_ms"] / 1000)
    error = f" {c['error_class']}" if c.get("error_class") else ""
    return (
        f"{when(c['started_at'])}  {c.get('provider')}/{c.get('model')}  {c['status']}{error}  "
        f"{c['input_tokens']} in, {c['output_tokens']} out  ${c['cost']:.6f}  {latency}"
    )


def diff_blocks(rows: list[dict[str, Any]], run_a: str, run_b: str) -> list[str]:
    """For each step that differs: the lines of its outcome that differ (- in A, + in B)."""
    lines: list[str] = []
    for row in rows:
        if row["same"] or not (row["in_a"] and row["in_b"]):
            continue
        a, b = row["a"], row["b"]
        if row["fields"]:
            a, b = {k: a.get(k) for k in row["fields"]}, {k: b.get(k) for k in row["fields"]}
        where = f" in {', '.join(row['fields'])}" if row["fields"] else ""
        lines.append(f"\nstep {row['step']} {row['name']} differs{where} (- {run_a}, + {run_b}):")
        for line in difflib.unified_diff(_lines(a), _lines(b), lineterm="", n=0):
            if not line.startswith(("---", "+++", "@@")):
                lines.append(f"  {line}")
    return lines


def _lines(value: Any) -> list[str]:
    return render(value) if value is not None else ["  " + json.dumps(None)]
