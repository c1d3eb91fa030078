"""``crewline run``, ``crewline runs ...`` and ``crewline prune``: starting and steering runs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..app import App
from ..config import parse_duration
from ..errors import ConfigError, RunFailed
from ..flows.attempts import Attempt
from ..flows.operations import parse_overrides
from ..flows.run_records import RunRecord
from ..flows.run_store import STATES
from ..flows.step_store import StepRecord
from ..models.call_log import call_rows, prune_payloads
from ..models.reports import usage_by_run, usage_by_step
from ..store.database import Conn
from ..store.retention import PruneReport
from ..store.retention import prune as prune_db
from ._common import (
    app_option,
    echo_json,
    errors_as_exit,
    fail,
    load_app,
    read_json_arg,
    table,
    user,
    when,
    with_app,
)
from ._runview import (
    diff_blocks,
    diff_verdict,
    error_text,
    money,
    run_seconds,
    span,
    step_detail,
    step_diff,
    tokens,
    usage_line,
)
from ._waiting import echo_err, no_worker_note, timed_out_message, wait_for_run, waiting_on_person

__all__ = ["prune", "run", "runs"]


@click.command()
@app_option
@click.argument("workflow")
@click.option("--input", "input_", default=None, help="The input as JSON, or @file.json.")
@click.option("--id", "run_id", default=None, help="Run id to use (starting the same id again is a no-op).")
@click.option("--idempotency-key", default=None, help="Starting with the same key returns the existing run.")
@click.option("--priority", type=int, default=None, help="Higher runs first within the queue.")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the run: print its output (exit 0) or error (exit 1), or the review it waits on (exit 3).",
)
@click.option("--timeout", default=None, help="With --wait: give up after this long (e.g. 30s, 5m).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def run(
    app_ref: str | None,
    workflow: str,
    input_: str | None,
    run_id: str | None,
    idempotency_key: str | None,
    priority: int | None,
    wait: bool,
    timeout: str | None,
    as_json: bool,
) -> None:
    """Start WORKFLOW (workers execute it; see `crewline worker`)."""
    if timeout is not None and not wait:
        fail("--timeout bounds --wait: add --wait to wait for the run, or drop --timeout")
    seconds = _duration(timeout)
    app = load_app(app_ref)
    payload = read_json_arg(input_, "--input")

    async def go(app: App) -> None:
        rid = await app.start(
            workflow, payload, run_id=run_id, idempotency_key=idempotency_key, priority=priority
        )
        if not wait:
            click.echo(_echo_line({"run_id": rid}) if as_json else rid)
            note = await no_worker_note(app)
            if note is not None:
                echo_err(note)
            return
        await _wait(app, rid, seconds, as_json)

    with_app(go, app)


async def _wait(app: App, rid: str, seconds: float | None, as_json: bool) -> None:
    try:
        end = await wait_for_run(app, rid, seconds)
    except RunFailed as e:
        if as_json:
            echo_json({"run_id": rid, "status": e.status, "error": e.error})
        else:
            click.echo(f"run {rid} {e.status}: {error_text(e.error)}", err=True)
        raise SystemExit(1) from None
    except TimeoutError:
        fail(await timed_out_message(app, rid, seconds), 1)
    if end.review is not None:
        if as_json:
            review = {"id": end.review.id, "kind": end.review.kind, "action": end.review.action}
            echo_json({"run_id": rid, "status": "waiting", "review": review})
        else:
            click.echo(waiting_on_person(rid, end.review))
        raise SystemExit(3)
    if as_json:
        echo_json({"run_id": rid, "status": "completed", "output": _plain(end.output)})
    else:
        click.echo(_echo_line(_plain(end.output)))


@click.group()
def runs() -> None:
    """List, inspect and steer runs."""


@runs.command("list")
@app_option
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--workflow", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(app_ref: str | None, state: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """Runs, newest first, with their duration, model tokens and cost."""

    async def go(app: App) -> tuple[list[RunRecord], dict[str, dict[str, Any]]]:
        records = await app.list_runs(state=state, workflow=workflow, limit=limit)
        ids = [r.id for r in records]
        return records, await app.db.read(lambda conn: usage_by_run(conn, ids))

    records, usage = with_app(go, load_app(app_ref))
    if as_json:
        echo_json([_run_summary(r, usage.get(r.id)) for r in records])
        return
    headers = ["id", "workflow", "status", "waiting for", "created", "duration", "tokens", "cost"]
    rows = [
        (
            r.id,
            f"{r.workflow} (shadow)" if r.shadow else r.workflow,
            r.status,
            r.wait_reason or "",
            when(r.created_at),
            span(run_seconds(r)),
            tokens(usage.get(r.id)),
            money(usage.get(r.id)),
        )
        for r in records
    ]
    click.echo(table(headers, rows))


@runs.command("show")
@app_option
@click.argument("run_id")
@click.option(
    "--step",
    "step_no",
    type=click.IntRange(1),
    default=None,
    help="Show this step in full: input, output, error, model, prompt, tokens, cost, timings.",
)
@click.option("--json", "as_json", is_flag=True)
def show_cmd(app_ref: str | None, run_id: str, step_no: int | None, as_json: bool) -> None:
    """A run and its steps (one line each), or one step in full with --step."""

    async def go(
        app: App,
    ) -> tuple[RunRecord, list[StepRecord], dict[int, dict[str, Any]], list[dict[str, Any]], list[Attempt]]:
        record, steps = await app.get_run(run_id), await app.steps(run_id)
        usage = await app.db.read(lambda conn: usage_by_step(conn, run_id))
        found = (
            []
            if step_no is None
            else await app.db.read(lambda conn: call_rows(conn, run_id=run_id, limit=1000))
        )
        history = await app.attempts(run_id)
        return record, steps, usage, [c for c in reversed(found) if c["step"] == step_no], history

    record, steps, usage, step_calls, history = with_app(go, load_app(app_ref))
    if step_no is not None:
        _show_step(record, steps, step_no, usage.get(step_no), step_calls, as_json)
        return
    total = _total(usage)
    if as_json:
        shown = {"steps": [s.to_json() for s in steps], "history": [a.to_json() for a in history]}
        echo_json({**record.to_json(), **_figures(record, total), **shown})
        return
    click.echo("\n".join(_run_lines(record, total)))
    if record.pruned_at is not None:
        return
    headers = ["#", "kind", "name", "effect", "status", "tries", "ms", "tokens", "cost", "output / error"]
    rows = [
        (
            s.step_no,
            s.kind,
            s.name if s.compensation is None else f"{s.name} (undo: {s.compensation})",
            s.effect,
            s.status,
            s.attempts,
            _ms(s),
            tokens(usage.get(s.step_no)),
            money(usage.get(s.step_no)),
            _brief(s),
        )
        for s in steps
    ]
    click.echo("\n" + table(headers, rows))
    for earlier in reversed(history):
        click.echo("\n" + "\n".join(_attempt_lines(earlier)))
    if steps:
        click.echo(f"\nOne step in full: crewline runs show {record.id} --step N")


def _run_lines(record: RunRecord, total: dict[str, Any] | None) -> list[str]:
    wait = f" ({record.wait_reason})" if record.wait_reason else ""
    lines = [
        f"run       {record.id}",
        f"workflow  {record.workflow} (version {record.version or '-'}, queue {record.queue})",
        f"status    {record.status}{wait}",
    ]
    forked = record.forked_from and f"{record.forked_from} from step {record.fork_step}"
    attempt = (
        record.attempt > 1 and f"{record.attempt} (rerun; the earlier attempts are shown below the steps)"
    )
    shown = (
        ("forked", forked),
        ("attempt", attempt),
        ("parent", record.parent_id),
        ("recovered", record.recoveries),
    )
    for label, value in shown:
        if value:
            lines.append(f"{label:<10}{value}")
    lines += [
        f"created   {when(record.created_at)}",
        f"finished  {when(record.finished_at)}",
        f"duration  {span(run_seconds(record))}",
        f"cost      {usage_line(total)}",
    ]
    if record.pruned_at is not None:
        gone = f"(pruned on {when(record.pruned_at)})"
        lines += [f"input     {gone}", f"output    {gone}", f"steps     {gone}"]
    else:
        lines.append(f"input     {_echo_line(record.input)}")
        if record.status == "completed":
            lines.append(f"output    {_echo_line(record.output)}")
    if record.error:
        lines.append(f"error     {error_text(record.error)}")
    return lines


def _show_step(
    record: RunRecord,
    steps: list[StepRecord],
    step_no: int,
    usage: dict[str, Any] | None,
    step_calls: list[dict[str, Any]],
    as_json: bool,
) -> None:
    step = next((s for s in steps if s.step_no == step_no), None)
    if step is None:
        have = f"it has steps 1 to {len(steps)}" if steps else "it has no steps recorded"
        if record.pruned_at is not None:
            have = f"its steps were pruned on {when(record.pruned_at)}"
        fail(f"run {record.id} has no step {step_no} ({have})")
    if as_json:
        echo_json({**step.to_json(), "run_id": record.id, "usage": usage, "calls": step_calls})
        return
    click.echo("\n".join(step_detail(record.id, step, usage, step_calls)))


def _total(usage: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    if not usage:
        return None
    keys = ("calls", "input_tokens", "output_tokens", "cost", "unpriced_calls")
    return {k: sum(u[k] for u in usage.values()) for k in keys}


def _figures(record: RunRecord, usage: dict[str, Any] | None) -> dict[str, Any]:
    """Duration, tokens and cost of a run, as --json prints them."""
    return {
        "duration_s": run_seconds(record),
        "tokens": 0 if not usage else usage["input_tokens"] + usage["output_tokens"],
        "cost": 0.0 if not usage else usage["cost"],
        "usage": usage,
    }


@runs.command("cancel")
@app_option
@click.argument("run_id")
@click.option(
    "--compensate",
    is_flag=True,
    help="First run the compensations its finished steps registered, newest first.",
)
def cancel_cmd(app_ref: str | None, run_id: str, compensate: bool) -> None:
    """Cancel a run; a running one stops at its next step boundary."""
    click.echo(with_app(lambda app: app.cancel(run_id, compensate=compensate, by=user()), load_app(app_ref)))


@runs.command("undo")
@app_option
@click.argument("run_id")
@click.option(
    "--step",
    "steps",
    type=click.IntRange(1),
    multiple=True,
    help="Only this step's compensation (repeatable; default: every step that registered one).",
)
def undo_cmd(app_ref: str | None, run_id: str, steps: tuple[int, ...]) -> None:
    """Run the compensations of RUN_ID's finished steps, newest first, each a recorded step.

    The run then ends cancelled (failed if it had failed), its error saying which steps were compensated.
    A compensation that fails waits in the review queue (`crewline review retry|skip|done`).
    """
    result = with_app(lambda app: app.undo(run_id, steps=steps, by=user()), load_app(app_ref))
    click.echo(f"run {run_id}: {result}; follow it with `crewline runs show {run_id}`")


_FROM_HELP = (
    "First step to execute again: its number, a step or checkpoint name (the first of that name), "
    "or NAME#2 for the second step of that name."
)


@runs.command("rerun")
@app_option
@click.argument("run_id")
@click.option("--from", "from_step", required=True, metavar="STEP", help=_FROM_HELP)
def rerun_cmd(app_ref: str | None, run_id: str, from_step: str) -> None:
    """Continue a finished run from a step, under the same id; its steps from there on are kept as the
    earlier attempt (shown by `runs show`)."""
    attempt, n = with_app(lambda app: app.rerun(run_id, from_step), load_app(app_ref))
    click.echo(
        f"run {run_id} reruns from step {n} as attempt {attempt}; follow it with: crewline runs show {run_id}"
    )


@runs.command("fork")
@app_option
@click.argument("run_id")
@click.option("--from", "from_step", required=True, metavar="STEP", help=_FROM_HELP)
@click.option("--id", "new_id", default=None, help="Id for the new run (refused if a run has it).")
@click.option(
    "--set",
    "variations",
    multiple=True,
    metavar="KEY=VALUE",
    help="Vary the rerun: model=strong, prompt=reply@candidate (repeatable).",
)
def fork_cmd(
    app_ref: str | None, run_id: str, from_step: str, new_id: str | None, variations: tuple[str, ...]
) -> None:
    """Start a new run that reuses RUN_ID's steps before --from and executes from there on."""
    with errors_as_exit():
        overrides = parse_overrides(list(variations)) or None
    click.echo(
        with_app(
            lambda app: app.fork(run_id, from_step, new_run_id=new_id, overrides=overrides), load_app(app_ref)
        )
    )


@runs.command("diff")
@app_option
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True)
def diff_cmd(app_ref: str | None, run_a: str, run_b: str, as_json: bool) -> None:
    """Two runs' steps compared (a fork against its original, say): which differ, and the lines that do."""

    async def go(app: App) -> tuple[list[StepRecord], list[StepRecord]]:
        await app.get_run(run_a)
        await app.get_run(run_b)
        return await app.steps(run_a), await app.steps(run_b)

    steps_a, steps_b = with_app(go, load_app(app_ref))
    rows = step_diff(steps_a, steps_b)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"A = {run_a}\nB = {run_b}\n")
    verdicts = [(r["step"], r["name"], r["kind"], diff_verdict(r)) for r in rows]
    click.echo(table(["#", "step", "kind", "outcome"], verdicts))
    click.echo("\n".join(diff_blocks(rows, "A", "B")))


@runs.command("event")
@app_option
@click.argument("run_id")
@click.argument("name")
@click.option("--payload", default=None, help="The event's payload as JSON, or @file.json.")
def event_cmd(app_ref: str | None, run_id: str, name: str, payload: str | None) -> None:
    """Send event NAME to RUN_ID: what its `ctx.wait_for(NAME)` waits for; the run then resumes."""
    value = read_json_arg(payload, "--payload")
    event_id = with_app(lambda app: app.send_event(run_id, name, value), load_app(app_ref))
    click.echo(f"event {name} sent to run {run_id} (event {event_id})")


@runs.command("resolve")
@app_option
@click.argument("run_id")
@click.option("--step", type=click.IntRange(1), required=True, help="The step whose outcome is unknown.")
@click.option(
    "--outcome",
    type=click.Choice(["done", "retry", "fail"]),
    required=True,
    help="done: it happened; retry: it did not, call again; fail: record it as failed.",
)
@click.option("--output", default=None, help="With done: what the step returned, as JSON or @file.json.")
def resolve_cmd(app_ref: str | None, run_id: str, step: int, outcome: str, output: str | None) -> None:
    """Settle an irreversible step whose outcome is unknown after a crash; the run then resumes."""
    value = read_json_arg(output, "--output")
    with_app(lambda app: app.resolve(run_id, step, outcome, value), load_app(app_ref))  # type: ignore[arg-type]
    click.echo(f"run {run_id} step {step} resolved as {outcome}; the run resumes")


@click.command()
@click.option("--older-than", default="30d", show_default=True, help="Age of finished runs to prune.")
@click.option("--delete-runs", is_flag=True, help="Delete the runs themselves, not only their payloads.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal)."
)
def prune(older_than: str, delete_runs: bool, dry_run: bool, yes: bool) -> None:
    """Remove finished runs' payloads (and unreferenced blobs) to keep the database bounded.

    Asks for confirmation on a terminal; elsewhere pass --yes. --dry-run only says what would go.
    """
    seconds = _duration(older_than) or 0.0
    now = time.time()  # one cutoff for the preview and the prune it confirms
    app = load_app(None)
    try:
        with errors_as_exit():
            plan = _prune(app, seconds, now, delete_runs, dry_run=True)
            if plan.empty:
                click.echo(f"nothing to prune: no finished run ended more than {older_than} ago")
                return
            if dry_run:
                click.echo(f"would prune {_what(plan, delete_runs)}")
                return
            if not yes:
                _confirm(f"prune {_what(plan, delete_runs)} for good?")
            report = _prune(app, seconds, now, delete_runs, dry_run=False)
    finally:
        app.close()
    click.echo(f"pruned {_what(report, delete_runs)}")


def _prune(app: App, seconds: float, now: float, delete_runs: bool, *, dry_run: bool) -> PruneReport:
    def calls(conn: Conn, cutoff: float) -> int:
        return prune_payloads(conn, 0.0, now=cutoff)

    return prune_db(app.db, seconds, delete_runs=delete_runs, dry_run=dry_run, now=now, also=calls)


def _what(report: PruneReport, delete_runs: bool) -> str:
    runs = f"{report.runs} runs (deleted)" if delete_runs else f"{report.runs} runs' input and output"
    return (
        f"{runs}, {report.steps} steps, {report.events} events, {report.model_calls} model calls' payloads, "
        f"{report.blobs} blobs ({report.blob_bytes} bytes)"
    )


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        fail(
            "prune removes data for good and this is not a terminal to ask on: pass --yes to go ahead, "
            "or --dry-run to see what would go"
        )
    if not click.confirm(question, default=False):
        fail("nothing pruned", 1)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigError as e:
        fail(str(e))


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _echo_line(value: Any) -> str:
    return json.dumps(_plain(value), default=str)


def _ms(step: StepRecord) -> str:
    return "-" if step.finished_at is None else f"{(step.finished_at - step.started_at) * 1000:.1f}"


def _brief(step: StepRecord) -> str:
    text = error_text(step.error) if step.error else _echo_line(step.output)
    return text if len(text) <= 60 else text[:57] + "..."


def _run_summary(r: RunRecord, usage: dict[str, Any] | None) -> dict[str, Any]:
    keys = (
        "id",
        "workflow",
        "status",
        "wait_reason",
        "queue",
        "priority",
        "created_at",
        "finished_at",
        "error",
        "forked_from",
        "parent_id",
        "pruned_at",
        "shadow",
        "shadow_of",
    )
    return {**{k: getattr(r, k) for k in keys}, **_figures(r, usage)}


def _attempt_lines(earlier: Attempt) -> list[str]:
    """An earlier attempt of a rerun run: how it ended and the steps it had from where the rerun began."""
    ended = earlier.status + (f": {error_text(earlier.error)}" if earlier.error else "")
    head = (
        f"attempt {earlier.attempt} (ended {ended}; rerun from step {earlier.from_step} on "
        f"{when(earlier.rerun_at)}): its steps from step {earlier.from_step} on"
    )
    headers = ["#", "kind", "name", "effect", "status", "tries", "output / error"]
    rows = [(s.step_no, s.kind, s.name, s.effect, s.status, s.attempts, _brief(s)) for s in earlier.steps]
    return [head, table(headers, rows) if rows else "(no steps)"]
