"""``crewline run``, ``crewline runs ...`` and ``crewline prune``: starting and steering runs."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app import App
from ..config import parse_duration
from ..errors import ConfigError, RunFailed
from ..flows.operations import parse_overrides
from ..flows.records import STATES, RunRecord, StepRecord
from ..models.records import prune_payloads
from ..store.retention import prune as prune_db
from ._common import (
    app_option,
    echo_json,
    errors_as_exit,
    fail,
    load_app,
    read_json_arg,
    table,
    when,
    with_app,
)

__all__ = ["prune", "run", "runs"]


@click.command()
@app_option
@click.argument("workflow")
@click.option("--input", "input_", default=None, help="The input as JSON, or @file.json.")
@click.option("--id", "run_id", default=None, help="Run id to use (starting the same id again is a no-op).")
@click.option("--idempotency-key", default=None, help="Starting with the same key returns the existing run.")
@click.option("--priority", type=int, default=None, help="Higher runs first within the queue.")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; print its output or its error.")
@click.option("--timeout", default=None, help="With --wait: give up after this long (e.g. 30s, 5m).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def run(app_ref: str | None, workflow: str, input_: str | None, run_id: str | None, idempotency_key: str | None,
        priority: int | None, wait: bool, timeout: str | None, as_json: bool) -> None:  # fmt: skip
    """Start WORKFLOW (workers execute it; see `crewline worker`)."""
    app = load_app(app_ref)
    payload = read_json_arg(input_, "--input")
    seconds = _duration(timeout)

    async def go(app: App) -> None:
        rid = await app.start(
            workflow, payload, run_id=run_id, idempotency_key=idempotency_key, priority=priority
        )
        if not wait:
            click.echo(echo_line({"run_id": rid}) if as_json else rid)
            return
        try:
            output = await app.result(rid, timeout=seconds)
        except RunFailed as e:
            if as_json:
                echo_json({"run_id": rid, "status": e.status, "error": e.error})
            else:
                click.echo(f"run {rid} {e.status}: {_error_text(e.error)}", err=True)
            raise SystemExit(1) from None
        except TimeoutError as e:
            fail(f"{e}; it keeps going, check it with `crewline runs show {rid}`", 1)
        if as_json:
            echo_json({"run_id": rid, "status": "completed", "output": _plain(output)})
        else:
            click.echo(echo_line(_plain(output)))

    with_app(go, app)


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
    """Runs, newest first."""
    records = with_app(
        lambda app: app.list_runs(state=state, workflow=workflow, limit=limit), load_app(app_ref)
    )
    if as_json:
        echo_json([_run_summary(r) for r in records])
        return
    rows = [(r.id, r.workflow, r.status, r.wait_reason or "", when(r.created_at), when(r.finished_at))
            for r in records]  # fmt: skip
    click.echo(table(["id", "workflow", "status", "waiting for", "created", "finished"], rows))


@runs.command("show")
@app_option
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(app_ref: str | None, run_id: str, as_json: bool) -> None:
    """A run and its steps."""

    async def go(app: App) -> tuple[RunRecord, list[StepRecord]]:
        return await app.get_run(run_id), await app.steps(run_id)

    record, steps = with_app(go, load_app(app_ref))
    if as_json:
        echo_json({**record.to_json(), "steps": [s.to_json() for s in steps]})
        return
    click.echo(f"run       {record.id}\nworkflow  {record.workflow} (version {record.version or '-'}, queue "
               f"{record.queue})\nstatus    {record.status}" + (f" ({record.wait_reason})" if record.wait_reason
               else ""))  # fmt: skip
    for label, value in (("forked", record.forked_from and f"{record.forked_from} from step {record.fork_step}"),
                         ("parent", record.parent_id), ("recovered", record.recoveries or None)):  # fmt: skip
        if value:
            click.echo(f"{label:<10}{value}")
    click.echo(f"created   {when(record.created_at)}\nfinished  {when(record.finished_at)}")
    click.echo(f"input     {echo_line(record.input)}")
    if record.status == "completed":
        click.echo(f"output    {echo_line(record.output)}")
    if record.error:
        click.echo(f"error     {_error_text(record.error)}")
    rows = [(s.step_no, s.kind, s.name, s.effect, s.status, s.attempts, _ms(s), _brief(s))
            for s in steps]  # fmt: skip
    click.echo("\n" + table(["#", "kind", "name", "effect", "status", "tries", "ms", "output / error"], rows))


@runs.command("cancel")
@app_option
@click.argument("run_id")
def cancel_cmd(app_ref: str | None, run_id: str) -> None:
    """Cancel a run; a running one stops at its next step boundary."""
    click.echo(with_app(lambda app: app.cancel(run_id), load_app(app_ref)))


@runs.command("fork")
@app_option
@click.argument("run_id")
@click.option(
    "--from", "from_step", type=click.IntRange(1), required=True, help="First step to execute again."
)
@click.option("--id", "new_id", default=None, help="Id for the new run (refused if a run has it).")
@click.option("--set", "variations", multiple=True, metavar="KEY=VALUE",
              help="Vary the rerun: model=strong, prompt=reply@candidate (repeatable).")  # fmt: skip
def fork_cmd(
    app_ref: str | None, run_id: str, from_step: int, new_id: str | None, variations: tuple[str, ...]
) -> None:
    """Start a new run that reuses RUN_ID's steps before --from and executes from there on."""
    with errors_as_exit():
        overrides = parse_overrides(list(variations)) or None
    click.echo(with_app(lambda app: app.fork(run_id, from_step, new_run_id=new_id, overrides=overrides),
                        load_app(app_ref)))  # fmt: skip


@runs.command("diff")
@app_option
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True)
def diff_cmd(app_ref: str | None, run_a: str, run_b: str, as_json: bool) -> None:
    """Two runs' steps side by side (a fork against its original, say)."""

    async def go(app: App) -> tuple[list[StepRecord], list[StepRecord]]:
        return await app.steps(run_a), await app.steps(run_b)

    steps_a, steps_b = with_app(go, load_app(app_ref))
    rows = step_diff(steps_a, steps_b)
    if as_json:
        echo_json(rows)
        return
    click.echo(table(["#", "step", "same", run_a[:12], run_b[:12]],
                     [(r["step"], r["name"], "=" if r["same"] else "*", _cell(r["a"]), _cell(r["b"])) for r in rows]))  # fmt: skip


def step_diff(a: list[StepRecord], b: list[StepRecord]) -> list[dict[str, Any]]:
    by_a, by_b = {s.step_no: s for s in a}, {s.step_no: s for s in b}
    out = []
    for n in sorted(set(by_a) | set(by_b)):
        sa, sb = by_a.get(n), by_b.get(n)
        va, vb = _outcome(sa), _outcome(sb)
        name = sa.name if sa is not None else sb.name if sb is not None else ""
        out.append({"step": n, "name": name, "same": va == vb, "a": va, "b": vb})
    return out


def _outcome(step: StepRecord | None) -> Any:
    if step is None:
        return None
    if step.error:
        return {"error": _error_text(step.error)}
    out = step.output
    if step.kind == "llm" and isinstance(out, dict):  # the answer and who gave it, not the bookkeeping
        return {"model": out.get("model"), "prompt": out.get("prompt"), "text": out.get("text"),
                "output": out.get("output")}  # fmt: skip
    return out


def _cell(value: Any) -> str:
    text = "-" if value is None else echo_line(value)
    return text if len(text) <= 48 else text[:45] + "..."


@runs.command("resolve")
@app_option
@click.argument("run_id")
@click.option("--step", type=click.IntRange(1), required=True, help="The step whose outcome is unknown.")
@click.option("--outcome", type=click.Choice(["done", "retry", "fail"]), required=True,
              help="done: it happened; retry: it did not, call again; fail: record it as failed.")  # fmt: skip
@click.option("--output", default=None, help="With done: what the step returned, as JSON or @file.json.")
def resolve_cmd(app_ref: str | None, run_id: str, step: int, outcome: str, output: str | None) -> None:
    """Settle an irreversible step whose outcome is unknown after a crash; the run then resumes."""
    value = read_json_arg(output, "--output")
    with_app(lambda app: app.resolve(run_id, step, outcome, value), load_app(app_ref))  # type: ignore[arg-type]
    click.echo(f"run {run_id} step {step} resolved as {outcome}; the run resumes")


@click.command()
@click.option("--older-than", default="30d", show_default=True, help="Age of finished runs to prune.")
@click.option("--delete-runs", is_flag=True, help="Delete the runs themselves, not only their payloads.")
def prune(older_than: str, delete_runs: bool) -> None:
    """Remove finished runs' payloads (and unreferenced blobs) to keep the database bounded."""
    seconds = _duration(older_than)
    app = load_app(None)
    try:
        calls = app.db.run(lambda conn: prune_payloads(conn, seconds or 0.0))
        report = prune_db(app.db, seconds or 0.0, delete_runs=delete_runs)
    finally:
        app.close()
    click.echo(
        f"pruned {', '.join(f'{n} {table}' for table, n in report.tables.items())}, {calls} model calls' "
        f"payloads, {report.blobs} blobs ({report.blob_bytes} bytes)"
    )


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


def echo_line(value: Any) -> str:
    return json.dumps(_plain(value), default=str)


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    where = f" (step {error['step']})" if error.get("step") is not None else ""
    return f"{error.get('type')}: {error.get('message')}{where}"


def _ms(step: StepRecord) -> str:
    return "-" if step.finished_at is None else f"{(step.finished_at - step.started_at) * 1000:.1f}"


def _brief(step: StepRecord) -> str:
    text = _error_text(step.error) if step.error else echo_line(step.output)
    return text if len(text) <= 60 else text[:57] + "..."


def _run_summary(r: RunRecord) -> dict[str, Any]:
    keys = ("id", "workflow", "status", "wait_reason", "queue", "priority", "created_at", "finished_at", "error",
            "forked_from", "parent_id")  # fmt: skip
    return {k: getattr(r, k) for k in keys}
