"""A workflow for the process-level crash tests: every step appends a line to a side-effect log."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from crewline import App, Context, RetryPolicy
from crewline.flows import Reconciled


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


def charge(log: str, run_id: str, die: bool, idempotency_key: str) -> str:
    """The irreversible action: the ledger (the log) is the system of record, by idempotency key. With
    ``die`` the worker is killed once right after the charge, before its result is recorded."""
    record(log, run_id, 2, f"charge:{idempotency_key}")
    if die and not Path(log + ".died").exists():
        Path(log + ".died").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return f"charged {idempotency_key}"


def charged(log: str, run_id: str, die: bool, idempotency_key: str) -> Reconciled:
    """Asks the ledger whether the charge with this key happened; ``log.unknown`` makes it unsure."""
    record(log, run_id, 2, f"check:{idempotency_key}")
    if Path(log + ".unknown").exists():
        return Reconciled.unknown()
    lines = Path(log).read_text(encoding="utf-8").split()
    return (
        Reconciled.done(f"charged {idempotency_key}")
        if f"charge:{idempotency_key}" in lines
        else Reconciled.not_done()
    )


async def billing(ctx: Context, job: dict[str, Any]) -> list[str]:
    log = str(job["log"])
    first = await ctx.step(effect, log, ctx.run_id, 1, 0.0, effect="idempotent", name="prepare")
    paid = await ctx.step(
        charge, log, ctx.run_id, bool(job.get("die")), effect="irreversible", reconcile=charged, name="charge"
    )
    last = await ctx.step(effect, log, ctx.run_id, 3, 0.0, effect="idempotent", name="receipt")
    return [str(first), paid, str(last)]


def register(app: App) -> App:
    app.workflow(name="chain")(chain)
    app.workflow(name="undoable")(undoable)
    app.workflow(name="reviewed", on_failure="review")(undoable)
    app.workflow(name="billing")(billing)
    return app


app = register(App())
