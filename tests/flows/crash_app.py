"""A workflow for the process-level crash tests: every step appends a line to a side-effect log."""

from __future__ import annotations

import os
import time
from pathlib import Path

from crewline import App, Context


def record(log: str, run_id: str, step: int, phase: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{run_id} {step} {phase} {os.getpid()} {time.time():.6f}\n")


async def effect(log: str, run_id: str, step: int, pause: float) -> int:
    record(log, run_id, step, "start")
    if pause:
        await _sleep(pause)
    record(log, run_id, step, "end")
    return step


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def chain(ctx: Context, job: dict[str, object]) -> list[int]:
    log, steps, pause = str(job["log"]), int(str(job["steps"])), float(str(job.get("pause", 0)))
    done = []
    for i in range(1, steps + 1):
        effect_kind = "irreversible" if i == job.get("irreversible_step") else "idempotent"
        done.append(await ctx.step(effect, log, ctx.run_id, i, pause, effect=effect_kind, name=f"effect-{i}"))
        if i == job.get("checkpoint_after"):
            await ctx.checkpoint("halfway")
    Path(log + ".done").touch()
    return done


def register(app: App) -> App:
    app.workflow(name="chain")(chain)
    return app


app = register(App())
