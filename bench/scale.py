"""Scale-out: 1, 2 and 4 `crewline worker` processes on one PostgreSQL (a cluster of its own).

    python bench/scale.py                          # both workloads, 1/2/4 workers
    python bench/scale.py --runs 200 --workers 1,2 --workload steps

Workloads, in ``scale_app.py``: ``steps`` (10 steps of ``x + 1``: the engine's own cost, bound by CPU and
commits) and ``model`` (3 ``ctx.llm`` calls each waiting 100 ms at the fake provider: bound by waiting,
which more workers overlap). For each worker count the workers start and idle, then the runs are started
(all at once, from one client) and drained; the table shows runs/s and steps/s from the first start to the
last completion, and CPU seconds per step per worker process
(user + system from /proc, read just before each worker is stopped), which is the figure that carries to a
larger machine: steps/s per core ~ 1 / (CPU per step), until PostgreSQL's commit rate (printed by
bench/run-engine as the bare commit baseline) is the limit.

On a 2-core machine the client, PostgreSQL and the workers share two cores: more than two busy worker
processes cannot run faster for CPU-bound steps, so the table shows where this machine stops scaling, not
where crewline does. API nodes (`serve --no-workers`) are not measured here: they only enqueue runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(HERE)]

from tests._pg import Cluster  # noqa: E402

from crewline.testing import FakeProvider  # noqa: E402

STEPS = {"steps": 10, "model": 3}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def enqueue(url: str, workload: str, runs: int) -> list[str]:
    import scale_app  # imported once CREWLINE_DATABASE_URL points at the cluster

    # concurrently, so that starts share group commits and one client is not what is measured
    return list(await asyncio.gather(*(scale_app.app.start(workload, i) for i in range(runs))))


def completed(url: str, workload: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM runs WHERE workflow = %s AND status = 'completed'", (workload,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:  # nothing has migrated the database yet
            return 0
    return int(row[0]) if row else 0


def measure(url: str, env: dict[str, str], workload: str, workers: int, runs: int) -> dict[str, float]:
    done_before = completed(url, workload)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "crewline", "worker", "--app", "scale_app:app", "-c", "50"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    time.sleep(4)  # started and idle: their start-up CPU is not the steps'
    idle = [cpu_seconds(p.pid) for p in procs]
    began = time.monotonic()
    asyncio.run(enqueue(url, workload, runs))
    while completed(url, workload) < done_before + runs:
        time.sleep(0.2)
    seconds = time.monotonic() - began
    cpu = [cpu_seconds(p.pid) - before for p, before in zip(procs, idle, strict=True)]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    steps = runs * STEPS[workload]
    return {
        "runs_per_s": runs / seconds,
        "steps_per_s": steps / seconds,
        "cpu_ms_per_step": 1000 * sum(cpu) / steps,
        "cpu_per_process": sum(cpu) / workers,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Runs/s and CPU per step with 1, 2 and 4 worker processes.")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--workload", choices=("steps", "model", "both"), default="both")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    workloads = ["steps", "model"] if args.workload == "both" else [args.workload]
    cluster = Cluster()
    fake = FakeProvider(latency=0.1, record=False).start()
    try:
        cluster.start()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(HERE)]),
            "CREWLINE_DATABASE_URL": cluster.url,
            "SCALE_FAKE_URL": fake.url,
        }
        os.environ.update({k: env[k] for k in ("CREWLINE_DATABASE_URL", "SCALE_FAKE_URL")})
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.runs} runs per row")
        print(
            f"{'workload':9} {'workers':>7} {'runs/s':>8} {'steps/s':>8} {'CPU ms/step':>11} {'speed-up':>8}"
        )
        for workload in workloads:
            base = None
            for n in counts:
                m = measure(cluster.url, env, workload, n, args.runs)
                base = base or m["steps_per_s"]
                print(
                    f"{workload:9} {n:>7} {m['runs_per_s']:>8.1f} {m['steps_per_s']:>8.1f} "
                    f"{m['cpu_ms_per_step']:>11.2f} {m['steps_per_s'] / base:>7.2f}x",
                    flush=True,
                )
            cost = m["cpu_ms_per_step"]
            print(
                f"  {workload}: at {cost:.2f} ms of worker CPU a step, one core carries ~{1000 / cost:.0f} "
                f"steps/s; a 16-core machine ~{16000 / cost:.0f} steps/s in workers before PostgreSQL's "
                "commit rate or its own CPU is the limit (on paper: this machine has 2 cores)"
            )
    finally:
        fake.stop()
        cluster.remove()


if __name__ == "__main__":
    main()
