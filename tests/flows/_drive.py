"""Drive runs by hand, step by step, with simulated crashes: claim, execute, expire leases."""

from __future__ import annotations

import time
from typing import Any

from crewline import App
from crewline.flows.engine import RunSignals
from crewline.flows.executor import execute_run
from crewline.workers.claim import claim_runs


class SimulatedCrash(BaseException):
    """The process died here: nothing after this point runs, nothing is cleaned up."""


class CrashPlan:
    """Crash once at each (point, step) listed, in any order they are reached."""

    def __init__(self, crashes: list[tuple[str, int]] | None = None) -> None:
        self.pending = list(crashes or [])
        self.fired: list[tuple[str, int]] = []

    def __call__(self, point: str, step: int) -> None:
        if (point, step) in self.pending:
            self.pending.remove((point, step))
            self.fired.append((point, step))
            raise SimulatedCrash(f"{point}:{step}")


async def expire_leases(app: App) -> None:
    await app.db.write(lambda c: c.execute("UPDATE runs SET lease_until = 0 WHERE status = 'running'"))


async def make_due(app: App) -> None:
    """Let a day pass: the engine's clock moves on and every parked run with a wake-up time is due now."""
    offset = app.engine.clock() - time.time() + 86400
    app.engine.clock = lambda: time.time() + offset
    await app.db.write(
        lambda c: c.execute("UPDATE runs SET wake_at = ? WHERE wake_at IS NOT NULL", (time.time() - 1,))
    )


async def step_once(app: App, owner: str) -> list[str]:
    """Claim whatever is due and execute it; returns each run's outcome ("crashed" for a simulated crash)."""
    engine = app.engine
    names = sorted(engine.workflows)
    runs = await engine.db.write(
        lambda c: claim_runs(c, owner=owner, workflows=names, limits={}, n=10, lease_seconds=30)
    )
    outcomes = []
    for run in runs:
        try:
            outcomes.append(await execute_run(engine, run, owner, RunSignals()))
        except SimulatedCrash:
            outcomes.append("crashed")
    return outcomes


async def drive(app: App, run_id: str, *, resolve: str = "retry", max_rounds: int = 100) -> Any:
    """Run until ``run_id`` finishes, recovering from simulated crashes like a fresh worker would."""
    for i in range(max_rounds):
        outcomes = await step_once(app, f"worker-{i}")
        run = await app.get_run(run_id)
        if run.status in ("completed", "failed", "cancelled"):
            return run
        if "crashed" in outcomes:
            await expire_leases(app)
        if run.status == "waiting" and (run.wait_reason or "").startswith("outcome unknown"):
            step = int((run.wait_reason or "").split("step ")[1].split(" ")[0])
            await app.resolve(run_id, step, resolve)  # type: ignore[arg-type]
        await make_due(app)
    raise AssertionError(f"run {run_id} did not finish in {max_rounds} rounds")
