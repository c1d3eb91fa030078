"""``crewline eval``: run an evaluation, list, show and compare stored ones.

Exit codes of ``eval run`` are for CI: 0 the evaluation passed, 1 it fell below ``--min-score``,
regressed against its baseline or stopped at its budget, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..app import App
from ..config import parse_duration
from ..evals import results
from ..evals.datasets import datasets_dir
from ..evals.gate import overrides
from ..evals.harvest import harvest_cases, write_cases
from ..evals.runner import Tools
from ..evals.targets import EvalAsk, evaluate
from ..evals.verdicts import compare_runs
from ..flows.definitions import parse_money
from ._common import app_option, echo_json, errors_as_exit, fail, load_app, table, when, with_app

__all__ = ["eval_group"]


@click.group("eval")
def eval_group() -> None:
    """Evaluations: datasets in evals/, scored runs of a prompt version, verdicts against a baseline."""


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", err=True, nl=done == total)


@eval_group.command("run")
@click.argument("target", required=False)
@click.option("--dataset", "-d", help="A dataset in evals/ (NAME.jsonl or NAME.yaml).")
@click.option("--prompt", help="The prompt version to evaluate: NAME@label or NAME@version.")
@click.option("--model", help="The model to send it to (default: the prompt's own).")
@click.option("--scorer", "scorers", multiple=True, help="A scorer (repeat for more): exact, fields, ...")
@click.option("--temperature", type=float, help="The sampling temperature (default: the model's).")
@click.option("--repeat", type=int, default=1, show_default=True, help="Times to run each case.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Cases at once.")
@click.option("--min-score", type=float, help="Fail (exit 1) when a scorer's mean is below this.")
@click.option("--baseline", help="Compare with this label's version (e.g. production).")
@click.option("--budget", help="Stop when the evaluation has spent this much (e.g. '$2').")
@click.option("--split", type=click.Choice(["train", "test"]), help="Only the cases of this split.")
@click.option("--strict", is_flag=True, help="Refuse a dataset with any bad line instead of skipping it.")
@click.option("--resume", help="Resume evaluation ID, stopped by a crash, without re-paying its cases.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@app_option
def run_cmd(target: str | None, app_ref: str | None, as_json: bool, **options: Any) -> None:
    """Evaluate TARGET: an [evals.NAME] section of crewline.toml, a prompt (NAME or NAME@label), or
    workflow:NAME (each case runs as a shadow run: nothing irreversible happens)."""
    if target is None and options["resume"] is None:
        fail("name a TARGET ([evals.NAME] or a prompt), or --resume ID")
    with errors_as_exit():
        budget = parse_money(options.pop("budget"), "")
        ask = EvalAsk(target, scorers=tuple(options.pop("scorers")), budget=budget, **options)
    app = load_app(app_ref)
    progress = _bar if sys.stderr.isatty() and not as_json else None

    async def go(a: App) -> results.EvalRun:
        tools = Tools(a.models, a.memory.embedder.embed, progress, a)
        # A workflow target's shadow runs need a worker; a prompt target's calls do not.
        worker = a.worker(concurrency=ask.concurrency) if (target or "").startswith("workflow:") else None
        task = None if worker is None else asyncio.create_task(worker.run())
        try:
            return await evaluate(a.settings, a.db, tools, ask, lambda line: click.echo(line, err=True))
        finally:
            if worker is not None and task is not None:
                worker.stop()
                await task

    run = with_app(go, app)
    if as_json:
        echo_json(run.to_json())
    else:
        _print_run(run)
    sys.exit(0 if run.passed else 1)


def _print_run(run: results.EvalRun) -> None:
    s = run.summary
    click.echo(f"evaluation {run.id}: {run.target} on {run.dataset}@{run.dataset_version} ({run.status})")
    rows = [
        (name, f"{v['mean']:.3f}", f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}]", f"{v['pass_rate']:.0%}")
        for name, v in s.get("scorers", {}).items()
    ]
    click.echo(table(["scorer", "mean", "95% CI", "pass rate"], rows))
    for name, v in s.get("scorers", {}).items():
        for field, accuracy in (v.get("fields") or {}).items():
            click.echo(f"  {name} field {field}: {accuracy:.0%}")
    click.echo(
        f"cases {s.get('cases', 0)}, runs {s.get('runs', 0)}/{s.get('expected_runs', s.get('runs', 0))}, "
        f"errored {s.get('errored', 0)}, cost ${s.get('cost', 0.0):.4f}, "
        f"latency p50 {s.get('latency_p50_ms', 0.0):.0f} ms p95 {s.get('latency_p95_ms', 0.0):.0f} ms"
    )
    flaky = {c: r for c, r in s.get("case_pass_rate", {}).items() if r < 1}
    if flaky:
        click.echo("cases not passing every repeat: " + ", ".join(f"{c} {r:.0%}" for c, r in flaky.items()))
    if "baseline" in s:
        b = s["baseline"]
        click.echo(
            f"verdict against {b['target']} ({b['run_id']}): {b['verdict']} (sign test on {b['paired']} "
            f"cases: {b['wins']} better, {b['losses']} worse, {b['ties']} same, p={b['p_value']:.3f})"
        )
    if run.status == "over_budget":
        click.echo("stopped at its budget: the results above are partial and stored", err=True)
    click.echo("passed" if run.passed else "FAILED")


def _with_db(fn: Callable[[App], Any], app_ref: str | None) -> Any:
    app = load_app(app_ref)
    try:
        with errors_as_exit():
            return fn(app)
    finally:
        app.close()


@eval_group.command("list")
@click.option("--target", help="Only evaluations of this target (e.g. prompt:triage).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@app_option
def list_cmd(target: str | None, limit: int, as_json: bool, app_ref: str | None) -> None:
    """Stored evaluations, newest first."""
    runs = _with_db(lambda a: results.list_runs(a.db, target=target, limit=limit), app_ref)
    if as_json:
        echo_json([r.to_json() for r in runs])
        return
    rows = [
        (
            r.id,
            r.target,
            f"{r.dataset}@{r.dataset_version}",
            r.status,
            "-" if r.passed is None else ("pass" if r.passed else "FAIL"),
            " ".join(f"{k}={v['mean']:.2f}" for k, v in r.summary.get("scorers", {}).items()),
            f"${r.cost:.4f}",
            when(r.started_at),
        )
        for r in runs
    ]
    click.echo(table(["id", "target", "dataset", "status", "result", "scores", "cost", "started"], rows))


@eval_group.command("show")
@click.argument("eval_id")
@click.option("--cases", is_flag=True, help="Every case's output, scores and error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@app_option
def show_cmd(eval_id: str, cases: bool, as_json: bool, app_ref: str | None) -> None:
    """One evaluation's figures (and with --cases each case)."""

    def read(a: App) -> tuple[results.EvalRun, list[results.CaseResult]]:
        return results.get_run(a.db, eval_id), results.case_results(a.db, eval_id) if cases else []

    run, found = _with_db(read, app_ref)
    if as_json:
        echo_json({**run.to_json(), **({"cases": [c.to_json() for c in found]} if cases else {})})
        return
    _print_run(run)
    for c in found:
        scores = " ".join(f"{k}={v['value']:.2f}" for k, v in c.scores.items())
        click.echo(f"{c.case_id}#{c.repeat} {scores} {c.error or ''} -> {str(c.output)[:80]}")


@eval_group.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@app_option
def compare_cmd(a: str, b: str, as_json: bool, app_ref: str | None) -> None:
    """Compare evaluation B with evaluation A on the cases both scored (sign test)."""
    verdict = _with_db(lambda app: compare_runs(app.db, a, b), app_ref)
    if as_json:
        echo_json(verdict)
        return
    click.echo(
        f"{b} against {a}: {verdict['verdict']} (mean change {verdict['delta']:+.3f} over "
        f"{verdict['paired']} cases: {verdict['wins']} better, {verdict['losses']} worse, p={verdict['p_value']:.3f})"
    )


@eval_group.command("overrides")
@click.option("--prompt", help="Only this prompt's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@app_option
def overrides_cmd(prompt: str | None, as_json: bool, app_ref: str | None) -> None:
    """Promotions forced past their evaluation: who, when, why."""
    found = _with_db(lambda a: overrides(a.db, prompt), app_ref)
    if as_json:
        echo_json(found)
        return
    rows = [(o["prompt"], o["label"], o["version"], o["who"], when(o["at"]), o["reason"]) for o in found]
    click.echo(table(["prompt", "label", "version", "who", "when", "reason"], rows))


@eval_group.command("harvest")
@click.option("--workflow", "-w", required=True, help="The workflow whose reviewed runs become cases.")
@click.option("--since", default="7d", show_default=True, help="How far back: 24h, 7d, 4w.")
@click.option(
    "--to", "to", type=click.Path(path_type=Path), help="The dataset (default evals/WORKFLOW.jsonl)."
)
@app_option
def harvest_cmd(workflow: str, since: str, to: Path | None, app_ref: str | None) -> None:
    """Append WORKFLOW's approved runs as cases: their input, and what the reviewer approved or edited."""
    with errors_as_exit():
        start = time.time() - parse_duration(since)
    app = load_app(app_ref)
    try:
        with errors_as_exit():
            found = app.db.query(lambda conn: harvest_cases(conn, workflow, start))
            path = to or datasets_dir(app.settings) / f"{workflow}.jsonl"
            added, known = write_cases(path, found.cases)
    finally:
        app.close()
    held = sum(c["split"] == "test" for c in found.cases)
    click.echo(
        f"{found.runs} runs of {workflow}: {len(found.cases)} reviewed ({held} held out for test), "
        f"{found.unreviewed} without an approved review; {added} cases added to {path.name}, "
        f"{known} already there"
    )
