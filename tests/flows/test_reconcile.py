"""Reconciliation in process: an "unknown" answer parks the run for an operator as before, and once they
settle it the replay passes the recorded check without asking again; a check that answers something else
than a Reconciled fails the run with a message saying what to return."""

from __future__ import annotations

from pathlib import Path

from crewline import App, Context

from . import crash_app
from ._drive import CrashPlan, drive, expire_leases, step_once


async def test_an_unknown_answer_parks_the_run_and_the_settled_run_replays_past_the_check(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    (tmp_path / "effects.log.unknown").touch()
    app = crash_app.register(App(db_url))
    try:
        app.engine.crash_hook = CrashPlan([("after_intent", 2)])
        rid = await app.start("billing", {"log": str(log)})
        assert await step_once(app, "w1") == ["crashed"]
        await expire_leases(app)
        assert await step_once(app, "w2") == ["parked"]
        run = await app.get_run(rid)
        assert run.status == "waiting" and run.wait_reason == "outcome unknown: step 2 (charge)"
        [review] = await app.reviews.list()
        assert review.kind == "outcome_unknown"
        await app.resolve(rid, 2, "retry")
        run = await drive(app, rid)
        assert run.status == "completed" and run.output == ["1", f"charged {rid}:2", "3"]
        lines = log.read_text().split()
        assert lines.count(f"check:{rid}:2") == 1 and lines.count(f"charge:{rid}:2") == 1
        steps = await app.steps(rid)
        assert [(s.kind, s.name) for s in steps] == [
            ("step", "prepare"),
            ("step", "charge"),
            ("reconcile", "reconcile charge"),
            ("step", "receipt"),
        ]
        assert steps[2].output == {"status": "unknown", "output": None}
    finally:
        app.close()


async def test_a_check_that_does_not_answer_a_reconciled_says_what_to_return(
    db_url: str, tmp_path: Path
) -> None:
    def confused(idempotency_key: str) -> bool:
        return True

    def act(idempotency_key: str) -> str:
        return "acted"

    app = App(db_url)

    @app.workflow()
    async def flow(ctx: Context) -> str:
        return await ctx.step(act, effect="irreversible", reconcile=confused)

    try:
        app.engine.crash_hook = CrashPlan([("after_intent", 1)])
        rid = await app.start("flow")
        assert await step_once(app, "w1") == ["crashed"]
        await expire_leases(app)
        run = await drive(app, rid)
        assert run.status == "failed"
        assert "the reconcile check " in str(run.error) and "must return Reconciled.done(output)" in str(
            run.error
        )
    finally:
        app.close()
