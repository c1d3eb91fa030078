"""A workflow for the process-level crash tests: every step appends a line to a side-effect log."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from crewline import App, Context, RetryPolicy


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


async def reserve(log: str, run_id: str, step: int) -> list[Any]:
    record(log, run_id, step, "reserve")
    return [log, run_id, step]


async def release(held: list[Any]) -> None:
    log, run_id, step = held
    record(log, run_id, int(step), "release")


def refuse(log: str) -> str:
    if not Path(log + ".fixed").exists():
        raise RuntimeError("the supplier refused the order")
    return "ordered"


async def undoable(ctx: Context, job: dict[str, object]) -> str:
    """Reserve ``steps`` things (each undone by a release), then a step that fails until ``log.fixed``."""
    log, steps = str(job["log"]), int(str(job["steps"]))
    for i in range(1, steps + 1):
        await ctx.step(
            reserve, log, ctx.run_id, i, effect="idempotent", compensate=release, name=f"reserve-{i}"
        )
    once = RetryPolicy(max_attempts=1)
    return await ctx.step(refuse, log, retry=once, name="order")


def register(app: App) -> App:
    app.workflow(name="chain")(chain)
    app.workflow(name="undoable")(undoable)
    app.workflow(name="reviewed", on_failure="review")(undoable)
    return app


app = register(App())
