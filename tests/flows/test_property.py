"""Property: whatever the crash schedule, a run ends with the same output as a crash-free run, and every
step's side effect happened exactly once."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crewline import App, Context

from ._drive import CrashPlan, drive

EFFECTS = ("read", "idempotent", "irreversible")
POINTS = ("after_intent", "after_step_commit", "before_run_completion")


def build(app: App, effects: list[str], counts: Counter[int]) -> None:
    def make(i: int):  # type: ignore[no-untyped-def]
        async def effect(total: int) -> int:
            counts[i] += 1
            return total * 3 + i

        effect.__qualname__ = f"effect_{i}"
        return effect

    fns = [make(i) for i in range(len(effects))]

    @app.workflow()
    async def chain(ctx: Context, seed: int) -> int:
        total = seed
        for fn, effect in zip(fns, effects, strict=True):
            total = await ctx.step(fn, total, effect=effect)  # type: ignore[arg-type]
        return total


async def outcome(
    db_url: str, effects: list[str], crashes: list[tuple[str, int]]
) -> tuple[object, Counter[int]]:
    counts: Counter[int] = Counter()
    app = App(db_url)
    try:
        build(app, effects, counts)
        app.engine.crash_hook = CrashPlan(crashes)
        rid = await app.start("chain", 1)
        run = await drive(app, rid)
        assert run.status == "completed", run.error
        return run.output, counts
    finally:
        app.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    effects=st.lists(st.sampled_from(EFFECTS), min_size=1, max_size=6),
    crashes=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(0, 6)), max_size=5, unique=True),
)
def test_random_crash_schedules_end_like_a_crash_free_run(
    effects: list[str], crashes: list[tuple[str, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clean, clean_counts = asyncio.run(outcome(f"sqlite:///{Path(tmp)}/clean.db", effects, []))
        crashed, crash_counts = asyncio.run(outcome(f"sqlite:///{Path(tmp)}/crashy.db", effects, crashes))
    assert crashed == clean
    assert clean_counts == crash_counts == Counter(range(len(effects)))
