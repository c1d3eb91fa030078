"""CPU time per durable step, in process: a figure that holds up on a busy machine.

Wall-clock steps/s (bench/engine.py) swings with whatever else the machine runs; the process's own CPU
time per step does much less, so it is what ``bench/compare`` uses to tell whether a change made steps
dearer. N runs of a 10-step workflow (each step ``x + 1``), all in flight at once on one worker, on a
fresh SQLite file (WAL, synchronous=FULL as crewline sets it), after a warm-up.

    python bench/step_cpu.py [--runs 300] [--observe]

``--observe`` times it with and without the Prometheus metrics observing every event, alternately in
fresh processes (three of each), and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

from crewline import App, Context


def inc(x: int) -> int:
    return x + 1


async def measure(runs: int, observe: bool = False) -> tuple[float, float]:
    """(CPU microseconds per step, steps per second of wall time)."""
    app = App(f"sqlite:///{tempfile.mkdtemp()}/steps.db")
    if observe:
        _ = app.metrics  # the metrics observe every event from here on

    @app.workflow()
    async def chain(ctx: Context, x: int) -> int:
        for _ in range(10):
            x = await ctx.step(inc, x)
        return x

    async def one() -> None:
        await app.result(await app.start(chain, 0), timeout=300)

    worker = asyncio.create_task(app.worker(concurrency=50).run())
    for _ in range(20):
        await one()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*[one() for _ in range(runs)])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    worker.cancel()
    return cpu / (runs * 10) * 1e6, runs * 10 / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--observe", action="store_true", help="time it with the metrics off and on")
    parser.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)  # one measurement, on
    args = parser.parse_args()
    if args.observe:
        command = [sys.executable, __file__, "--runs", str(args.runs)]
        for _ in range(3):
            for extra in ([], ["--metrics"]):
                subprocess.run([*command, *extra], check=True)
        return
    cpu_us, steps_per_s = asyncio.run(measure(args.runs, args.metrics))
    label = "metrics on" if args.metrics else "step_cpu"
    print(f"{label}: {args.runs * 10} steps, {cpu_us:.0f} us CPU per step, {steps_per_s:.0f} steps/s wall")
    sys.stdout.flush()
    os._exit(0)  # the worker task is cancelled mid-poll; nothing is left to flush


if __name__ == "__main__":
    main()
