"""Scale-out: 1, 2 and 4 `crewline worker` processes on one PostgreSQL (a cluster of its own).

    python bench/scale.py                          # both workloads, 1/2/4 workers, then 1/2 API nodes
    python bench/scale.py --runs 200 --workers 1,2 --workload steps --api ""
    python bench/scale.py --runs 200 --workload none --api 1,2   # API nodes only

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
where crewline does.

API nodes: ``--api 1,2`` also runs N ``crewline serve --no-workers`` processes on their own ports against the
same PostgreSQL, with ``--api-workers`` worker processes executing the runs (the ``steps`` workload). A pool
of ``--clients`` concurrent httpx clients in this process starts the runs with ``POST /api/v1/runs`` and a
trigger key, request i going to node i mod N; the table shows accepted runs/s at the API (first request to
last answer), completed runs/s (to the last completion), the p50/p95 latency of one start as a client
sees it, and CPU ms per start per API process (and of the client, which shares the same two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(HERE)]

import httpx  # noqa: E402
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def trigger_token() -> str:
    import scale_app
    from crewline.server.keys import create_key

    _, token = scale_app.app.db.run(lambda conn: create_key(conn, scope="trigger", name="scale"))
    return token


def start_nodes(env: dict[str, str], nodes: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ports = [free_port() for _ in range(nodes)]
    serve = [sys.executable, "-m", "crewline", "serve", "--app", "scale_app:app", "--no-workers"]
    procs = [
        subprocess.Popen(
            [*serve, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    deadline = time.monotonic() + 120
    for url in urls:
        while not ready(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"crewline serve on {url} did not become ready")
            time.sleep(0.2)
    return procs, urls


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


async def start_over_http(urls: list[str], token: str, runs: int, clients: int) -> tuple[list[float], int]:
    """Start ``runs`` runs from ``clients`` concurrent tasks; the latency of each accepted start, and the
    number refused."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    pool = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) for url in urls]
    latencies: list[float] = []
    refused = 0
    counter = iter(range(runs))

    async def client() -> None:
        nonlocal refused
        for i in counter:
            began = time.perf_counter()
            answer = await pool[i % len(pool)].post("/api/v1/runs", json={"workflow": "steps", "input": i})
            if answer.status_code == 201:
                latencies.append(time.perf_counter() - began)
            else:
                refused += 1

    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        for http in pool:
            await http.aclose()
    return latencies, refused


def measure_api(url: str, env: dict[str, str], nodes: int, args: argparse.Namespace) -> dict[str, float]:
    done_before = completed(url, "steps")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "crewline", "worker", "--app", "scale_app:app", "-c", "50"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(args.api_workers)
    ]
    procs, urls = start_nodes(env, nodes)
    try:
        token = trigger_token()
        time.sleep(2)  # started and idle: their start-up CPU is not the starts'
        idle = [cpu_seconds(p.pid) for p in procs]
        client_before = time.process_time()
        began = time.monotonic()
        latencies, refused = asyncio.run(start_over_http(urls, token, args.runs, args.clients))
        accepted_s = time.monotonic() - began
        api_cpu = [cpu_seconds(p.pid) - before for p, before in zip(procs, idle, strict=True)]
        client_cpu = time.process_time() - client_before
        while completed(url, "steps") < done_before + len(latencies):
            time.sleep(0.2)
        completed_s = time.monotonic() - began
    finally:
        for p in [*procs, *workers]:
            p.send_signal(signal.SIGTERM)
        for p in [*procs, *workers]:
            p.wait(60)
    latencies.sort()
    ok = max(len(latencies), 1)
    return {
        "accepted_per_s": len(latencies) / accepted_s,
        "completed_per_s": len(latencies) / completed_s,
        "p50_ms": 1000 * latencies[ok // 2] if latencies else 0.0,
        "p95_ms": 1000 * latencies[min(ok - 1, ok * 95 // 100)] if latencies else 0.0,
        "api_cpu_ms": 1000 * sum(api_cpu) / nodes / ok,
        "api_cpu_ms_total": 1000 * sum(api_cpu) / ok,
        "client_cpu_ms": 1000 * client_cpu / ok,
        "refused": refused,
    }


def api_table(url: str, env: dict[str, str], args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.api.split(",") if n]
    print(
        f"API nodes (serve --no-workers), {args.api_workers} worker processes, {args.clients} clients, "
        "workload steps"
    )
    print(
        f"{'nodes':>5} {'accepted/s':>10} {'completed/s':>11} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'API CPU ms/start/proc':>21} {'client CPU ms/start':>19} {'refused':>7}"
    )
    for n in counts:
        m = measure_api(url, env, n, args)
        print(
            f"{n:>5} {m['accepted_per_s']:>10.1f} {m['completed_per_s']:>11.1f} {m['p50_ms']:>7.1f} "
            f"{m['p95_ms']:>7.1f} {m['api_cpu_ms']:>21.2f} {m['client_cpu_ms']:>19.2f} {m['refused']:>7.0f}",
            flush=True,
        )
    cost = m["api_cpu_ms_total"]
    print(
        f"  api: a start costs the API nodes {cost:.2f} ms of CPU in all, so one core of API nodes accepts "
        f"~{1000 / cost:.0f} starts/s (on paper: the client, PostgreSQL and the workers share these cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Runs/s and CPU per step with 1, 2 and 4 worker processes; starts/s over 1 and 2 API nodes."
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--workload", choices=("steps", "model", "both", "none"), default="both")
    parser.add_argument("--api", default="1,2", help="API node counts to measure ('' to skip)")
    parser.add_argument("--api-workers", type=int, default=2, help="worker processes behind the API nodes")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients starting runs")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n]
    workloads = {"both": ["steps", "model"], "none": []}.get(args.workload, [args.workload])
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
        if workloads:
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
        if args.api:
            api_table(cluster.url, env, args)
    finally:
        fake.stop()
        cluster.remove()


if __name__ == "__main__":
    main()
