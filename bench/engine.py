"""Durable-engine benchmark: crewline against DBOS Transact, on SQLite and PostgreSQL, at equal durability.

Run it as ``bench/run-engine`` (it builds bench/.venv with crewline and DBOS, starts PostgreSQL, then runs
this file). What it measures, in one invocation:

* a bare fsync'd commit on this disk (BEGIN; one INSERT; COMMIT at the engine's durability: SQLite WAL +
  synchronous=FULL; PostgreSQL synchronous_commit=on), back to back on a thread of its own, the floor any
  durable step pays;
* a 10-step workflow (each step ``x + 1``), on crewline and on DBOS, on SQLite and on PostgreSQL,
  (a) sequentially, one run at a time, and (b) with 50 runs in flight (50 closed-loop clients, each
  starting a run and waiting for its result). Throughput counts runs and steps finished inside a timed
  window after a warm-up; a step's latency is what the workflow sees: from calling the step to getting
  its checkpointed result back (the call plus its durable commit);
* (c) crewline recovery: a worker subprocess is SIGKILLed mid-run, another is started, and the time from
  the kill to the first step the new worker executes is compared to the lease.

Durability is the same for both systems: every SQLite connection runs synchronous=FULL (the library
default here, checked and printed) in WAL mode (crewline sets it; the DBOS file is created in WAL mode,
which persists, and DBOS's own connection is checked); PostgreSQL runs synchronous_commit=on and
fsync=on (checked and printed). Each (system, database) case runs in a fresh subprocess on a fresh
database, so no case inherits another's threads, caches or rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from crewline import App, Context, Settings

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
STEPS = 10
SYSTEMS = ("crewline", "dbos")
OBSERVED = "crewline+metrics"  # crewline with the Prometheus metrics observing every event (--observe)
DATABASES = ("sqlite", "postgresql")
RESULT_PREFIX = "BENCH-RESULT "


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Step and run completions, as (perf_counter at the end, latency) pairs, shared by the workflows."""

    steps: list[tuple[float, float]] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    def step(self, began: float) -> None:
        now = time.perf_counter()
        self.steps.append((now, now - began))

    def reset(self) -> None:
        self.steps.clear()
        self.runs.clear()


REC = Recorder()


@dataclass
class Measurement:
    runs_per_s: float
    steps_per_s: float
    p50_ms: float
    p99_ms: float
    samples: int


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    run_once: Callable[[], Awaitable[None]], inflight: int, warmup: float, seconds: float
) -> Measurement:
    """``inflight`` clients run workflows back to back; count what finishes in [warmup, warmup + seconds]."""
    REC.reset()
    begin = time.perf_counter() + warmup
    end = begin + seconds

    async def client() -> None:
        while time.perf_counter() < end:
            await run_once()
            REC.runs.append(time.perf_counter())

    await asyncio.gather(*(client() for _ in range(inflight)))
    latencies = [lat for t, lat in REC.steps if begin <= t < end]
    runs = [t for t in REC.runs if begin <= t < end]
    return Measurement(
        runs_per_s=len(runs) / seconds,
        steps_per_s=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        samples=len(latencies),
    )


# -- the systems under test --------------------------------------------------------------------------


async def inc(x: int) -> int:
    return x + 1


class Driver(Protocol):
    durability: str

    async def run_once(self) -> None: ...

    async def close(self) -> None: ...


class CrewlineDriver:
    """One App and one worker in this process; a client starts a run and waits for its result."""

    def __init__(self, url: str, concurrency: int, observe: bool = False) -> None:
        self.app = App(settings=Settings().with_(database_url=url))
        if observe:
            _ = self.app.metrics  # from here on every step and run event feeds the metrics
        self._finished: dict[str, asyncio.Future[None]] = {}
        self.workflow = self.app.workflow(name="bench_ten")(self._ten)
        self.worker = self.app.worker(concurrency=concurrency)
        self._task = asyncio.create_task(self.worker.run())
        if url.startswith("sqlite"):
            mode = self.app.db.query(
                lambda c: (c.scalar("PRAGMA journal_mode"), c.scalar("PRAGMA synchronous"))
            )
            self.durability = f"journal_mode={mode[0]} synchronous={mode[1]}"
        else:
            self.durability = self.app.db.query(_pg_durability)

    async def _ten(self, ctx: Context, n: int) -> int:
        for _ in range(STEPS):
            began = time.perf_counter()
            n = await ctx.step(inc, n)
            REC.step(began)
        fut = self._future(ctx.run_id)
        if not fut.done():
            fut.set_result(None)
        return n

    def _future(self, run_id: str) -> asyncio.Future[None]:
        fut = self._finished.get(run_id)
        if fut is None:
            fut = self._finished[run_id] = asyncio.get_running_loop().create_future()
        return fut

    async def run_once(self) -> None:
        run_id = await self.app.start(self.workflow, 0)
        # Woken in-process when the workflow body returns: by then the worker has queued the run's
        # completion for the next group commit, so an empty write queued now returns once it is committed
        # (commits are applied in order by one thread) and app.result() usually needs a single read.
        # Polling app.result() from 50 clients instead costs more CPU than the engine under test.
        await asyncio.wait_for(self._future(run_id), 120)
        del self._finished[run_id]
        await self.app.db.write(lambda conn: None, quick=True)
        result = await self.app.result(run_id, timeout=60, poll=0.001)
        assert result == STEPS, result

    async def close(self) -> None:
        self.worker.stop()
        await self._task
        self.app.close()


def _pg_durability(conn: Any) -> str:
    sync = conn.scalar("SHOW synchronous_commit")
    fsync = conn.scalar("SHOW fsync")
    return f"synchronous_commit={sync} fsync={fsync}"


class DbosDriver:
    """DBOS Transact launched in this process; a client starts a workflow and awaits its handle."""

    def __init__(self, url: str) -> None:
        from dbos import DBOS, DBOSConfig

        @DBOS.step()
        async def dbos_inc(x: int) -> int:
            return x + 1

        @DBOS.workflow()
        async def dbos_ten(n: int) -> int:
            for _ in range(STEPS):
                began = time.perf_counter()
                n = await dbos_inc(n)
                REC.step(began)
            return n

        self._dbos = DBOS
        self._workflow = dbos_ten
        config: DBOSConfig = {
            "name": "crewline-bench",
            "system_database_url": url,
            "run_admin_server": False,
            "log_level": "WARNING",
        }
        self._instance = DBOS(config=config)
        DBOS.launch()
        self.durability = self._check_durability(url)

    def _check_durability(self, url: str) -> str:
        import sqlalchemy as sa

        engine = self._instance._sys_db.engine  # the engine DBOS itself uses for its checkpoints
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                journal = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
                sync = conn.execute(sa.text("PRAGMA synchronous")).scalar()
                return f"journal_mode={journal} synchronous={sync}"
            sync = conn.execute(sa.text("SHOW synchronous_commit")).scalar()
            fsync = conn.execute(sa.text("SHOW fsync")).scalar()
            return f"synchronous_commit={sync} fsync={fsync}"

    async def run_once(self) -> None:
        handle = await self._dbos.start_workflow_async(self._workflow, 0)
        result = await handle.get_result()
        assert result == STEPS, result

    async def close(self) -> None:
        self._dbos.destroy()


async def run_case(system: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One system on one database: a bare-commit baseline either side of the sequential window (the disk's
    speed drifts on a shared machine), then the sequential and the in-flight windows."""
    driver: Driver = (
        CrewlineDriver(url, args.inflight, observe=system == OBSERVED)
        if system.startswith("crewline")
        else DbosDriver(url)
    )
    try:
        before = await asyncio.to_thread(baseline, url, args.baseline_seconds)
        seq = await measure(driver.run_once, 1, args.warmup, args.seq_seconds)
        after = await asyncio.to_thread(baseline, url, args.baseline_seconds)
        conc = await measure(driver.run_once, args.inflight, args.warmup, args.conc_seconds)
        pair = await paired(driver, url, args.paired_seconds)
    finally:
        await driver.close()
    return {
        "durability": driver.durability,
        "commits_per_s": [before, after],
        "sequential": asdict(seq),
        "inflight": asdict(conc),
        "paired": pair,
    }


# -- databases ---------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def fresh_pg_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def fresh_sqlite(name: str, *, wal: bool) -> str:
    DATA.mkdir(exist_ok=True)
    path = DATA / f"{name}.sqlite"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if wal:  # journal_mode=WAL is stored in the file: whoever opens it next runs in WAL mode
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    return f"sqlite:///{path}"


def fresh_database(database: str, name: str, pg_url: str | None) -> str:
    if database == "sqlite":
        return fresh_sqlite(name, wal=True)
    assert pg_url is not None
    return fresh_pg_database(pg_url, name)


# -- baseline: one bare fsync'd commit ---------------------------------------------------------------

# How the reference commit is taken, printed with the figures that use it.
REFERENCE = (
    "one bare commit = BEGIN; one INSERT of a 64-byte row; COMMIT, back to back on a thread of its own with "
    "nothing else to do (the engine's group commits run on such a thread), at the engine's durability: "
    "SQLite WAL + synchronous=FULL, PostgreSQL synchronous_commit=on with the three statements pipelined "
    "(one round trip)"
)


class BareCommits:
    """One small row per transaction, committed at the durability under test: the floor a step pays.

    Commits are timed on a thread that does nothing else. Timed on the event loop's thread, between the
    runs of the sequential window, each ``fdatasync`` measured 5-10x longer on a loaded machine (read
    with ``strace -f -T``: about 1 ms at p50 against 0.1 ms for the same call on an idle thread): Linux
    wakes a thread that has been busy on the CPU later than one that mostly sleeps, so a reference taken
    there timed the scheduler, not the disk.
    """

    def __init__(self, url: str) -> None:
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        if url.startswith("sqlite"):
            # The engine's own connection settings (WAL and synchronous=FULL, see SqliteDialect.connect).
            conn = sqlite3.connect(
                fresh_sqlite("baseline", wal=True)[len("sqlite:///") :],
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            # Steady state: grow the WAL once and rewind it, so the commits measured overwrite it in place
            # like a long-running database's do (a commit that grows the file also flushes its new size).
            conn.execute("INSERT INTO t (v) VALUES (?)", (bytes(4 << 20),))
            conn.execute("DELETE FROM t")
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
            self._sqlite = conn
        else:
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True)
            self._pg.execute("SET synchronous_commit = on")
            self._pg.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id BIGSERIAL PRIMARY KEY, v BYTEA)")

    def commit(self) -> float:
        """One commit; returns its latency in seconds."""
        row = (b"x" * 64,)
        began = time.perf_counter()
        if self._sqlite is not None:
            self._sqlite.execute("BEGIN IMMEDIATE")
            self._sqlite.execute("INSERT INTO t (v) VALUES (?)", row)
            self._sqlite.execute("COMMIT")
        else:
            with self._pg.pipeline():
                self._pg.execute("BEGIN")
                self._pg.execute("INSERT INTO bench_baseline (v) VALUES (%s)", row)
                self._pg.execute("COMMIT")
        return time.perf_counter() - began

    def commits(self, n: int) -> list[float]:
        """``n`` commits back to back; their latencies in seconds."""
        return [self.commit() for _ in range(n)]

    def close(self) -> None:
        (self._sqlite or self._pg).close()


def baseline(url: str, seconds: float) -> float:
    """Bare fsync'd commits per second, one at a time (call it on a thread of its own)."""
    bare = BareCommits(url)
    try:
        n, began = 0, time.perf_counter()
        while time.perf_counter() < began + seconds:
            bare.commit()
            n += 1
        return n / (time.perf_counter() - began)
    finally:
        bare.close()


async def paired(driver: Driver, url: str, seconds: float) -> dict[str, float]:
    """Sequential step latency against bare-commit latency, sampled alternately over the same seconds.

    One run (10 steps), then 10 bare commits on the reference thread, and again: on a shared machine the
    disk's fsync time drifts several-fold within seconds, so only samples taken side by side compare
    fairly.
    """
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="bench-reference") as reference:
        bare = await loop.run_in_executor(reference, BareCommits, url)
        commits: list[float] = []
        REC.reset()
        try:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                await driver.run_once()
                commits.extend(await loop.run_in_executor(reference, bare.commits, STEPS))
        finally:
            await loop.run_in_executor(reference, bare.close)
    steps = [lat for _, lat in REC.steps]
    step_ms, commit_ms = percentile(steps, 0.5) * 1000, percentile(commits, 0.5) * 1000
    return {"step_p50_ms": step_ms, "commit_p50_ms": commit_ms, "ratio": step_ms / commit_ms}


# -- recovery: SIGKILL a worker mid-run --------------------------------------------------------------

RECOVERY_STEPS = 30
RECOVERY_STEP_SECONDS = 0.1


async def nap(i: int) -> int:
    await asyncio.sleep(RECOVERY_STEP_SECONDS)
    return i


def recovery_app(url: str, lease: float) -> App:
    app = App(settings=Settings().with_(database_url=url, lease_seconds=lease))

    @app.workflow(name="bench_slow")
    async def slow(ctx: Context) -> int:
        total = 0
        for i in range(RECOVERY_STEPS):
            total += await ctx.step(nap, i)
        return total

    return app


async def recovery_worker(url: str, lease: float) -> None:
    """A worker process for the recovery test; it runs until SIGTERM (graceful) or SIGKILL."""
    app = recovery_app(url, lease)
    worker = app.worker(concurrency=4)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    await worker.run()
    app.close()


def spawn_worker(url: str, lease: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--recovery-worker", url, "--lease", str(lease)]
    return subprocess.Popen(cmd)


async def recovery(url: str, lease: float) -> dict[str, Any]:
    app = recovery_app(url, lease)
    run_id = await app.start("bench_slow")
    first = spawn_worker(url, lease)
    second: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while len(await app.steps(run_id)) < 5:
            if time.monotonic() > deadline:
                raise TimeoutError("the first worker never reached step 5")
            await asyncio.sleep(0.01)
        run = await app.get_run(run_id)
        killed = time.time()
        os.kill(first.pid, signal.SIGKILL)
        lease_left = (run.lease_until or killed) - killed
        first.wait()
        second = spawn_worker(url, lease)
        steps_at_kill = len(await app.steps(run_id))
        resumed: float | None = None
        while resumed is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no worker resumed the run")
            later = [s.started_at for s in await app.steps(run_id) if s.started_at >= killed]
            resumed = min(later) if later else None
            await asyncio.sleep(0.01)
        output = await app.result(run_id, timeout=60)
        steps = await app.steps(run_id)
        run = await app.get_run(run_id)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        app.close()
    return {
        "lease_s": lease,
        "resume_s": resumed - killed,
        "lease_left_at_kill_s": lease_left,
        "steps_at_kill": steps_at_kill,
        "steps_recorded": len(steps),
        "output_ok": output == sum(range(RECOVERY_STEPS)),
        "recoveries": run.recoveries,
    }


# -- orchestration -----------------------------------------------------------------------------------


def run_subcase(argv: list[str]) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result is the JSON on its line starting RESULT_PREFIX."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv], stdout=subprocess.PIPE, text=True
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise RuntimeError(f"case {argv} failed with exit code {proc.returncode}:\n{proc.stdout[-2000:]}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average {load}"


def median_case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over repeated passes of one case."""
    out: dict[str, Any] = {"durability": runs[0]["durability"], "passes": len(runs)}
    out["commits_per_s"] = [c for r in runs for c in r["commits_per_s"]]
    for mode in ("sequential", "inflight", "paired"):
        out[mode] = {k: statistics.median(r[mode][k] for r in runs) for k in runs[0][mode]}
    return out


def print_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    cases: dict[str, dict[str, Any]] = {key: median_case(runs) for key, runs in results["cases"].items()}
    passes = f", median of {args.repeat} passes" if args.repeat > 1 else ""
    print()
    print(f"machine: {results['machine']}")
    print(
        f"workflow: {STEPS} steps of x + 1; sequential = 1 run at a time; in flight = {args.inflight} clients, each "
        f"starting a run and awaiting its result; windows {args.seq_seconds:g} s / {args.conc_seconds:g} s after "
        f"{args.warmup:g} s warm-up{passes}; event loop {args.loop} for both systems"
    )
    print()
    _print_table(cases, args)
    print()
    _print_baselines(cases)
    _print_goals(cases, args)
    _print_observed(cases)
    _print_recovery(results["recovery"])


def _print_table(cases: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    head = f"{'system':<16} {'database':<11} {'mode':<12} {'runs/s':>8} {'steps/s':>8} {'p50 step ms':>12} {'p99 step ms':>12}"
    print(head)
    print("-" * len(head))
    for key, case in cases.items():
        system, database = key.split(":")
        for mode, label in (("sequential", "sequential"), ("inflight", f"{args.inflight} in flight")):
            m = case[mode]
            print(
                f"{system:<16} {database:<11} {label:<12} {m['runs_per_s']:>8.1f} {m['steps_per_s']:>8.1f} "
                f"{m['p50_ms']:>12.2f} {m['p99_ms']:>12.2f}"
            )


def _print_baselines(cases: dict[str, dict[str, Any]]) -> None:
    print(f"reference: {REFERENCE}")
    for key, case in cases.items():
        print(f"durability {key}: {case['durability']}")
    for database in DATABASES:
        rates = [
            c for key, case in cases.items() if key.endswith(":" + database) for c in case["commits_per_s"]
        ]
        if rates:
            mid = statistics.median(rates)
            print(
                f"baseline {database}: {mid:.0f} fsync'd commits/s = {1000 / mid:.2f} ms per commit, one bare "
                f"transaction at a time (median of {len(rates)} measurements taken inside the cases, "
                f"range {min(rates):.0f}-{max(rates):.0f}/s)"
            )


def _print_goals(cases: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    for database in DATABASES:
        ours, theirs = cases.get(f"crewline:{database}"), cases.get(f"dbos:{database}")
        if ours and theirs:
            ratio = ours["inflight"]["steps_per_s"] / theirs["inflight"]["steps_per_s"]
            verdict = "met" if ratio >= 10 else "MISSED"
            print(
                f"goal {database}: crewline/DBOS steps/s with {args.inflight} in flight = {ratio:.1f}x "
                f"(goal >= 10x): {verdict}"
            )
        if ours:
            pair = ours["paired"]
            verdict = "met" if pair["ratio"] <= 1.5 else "MISSED"
            print(
                f"goal {database}: crewline sequential p50 step {pair['step_p50_ms']:.2f} ms = "
                f"{pair['ratio']:.2f}x the p50 bare commit ({pair['commit_p50_ms']:.2f} ms), sampled alternately "
                f"over {args.paired_seconds:g} s (goal <= 1.5x): {verdict}"
            )
        if theirs:
            pair = theirs["paired"]
            print(
                f"     {database}: DBOS sequential p50 step {pair['step_p50_ms']:.2f} ms = {pair['ratio']:.2f}x "
                f"the p50 bare commit ({pair['commit_p50_ms']:.2f} ms), sampled the same way"
            )


def _print_observed(cases: dict[str, dict[str, Any]]) -> None:
    """Metrics on beside off, when --observe ran both."""
    for database in DATABASES:
        off, on = cases.get(f"crewline:{database}"), cases.get(f"{OBSERVED}:{database}")
        if off and on:
            for mode in ("sequential", "inflight"):
                a, b = on[mode]["steps_per_s"], off[mode]["steps_per_s"]
                print(
                    f"metrics on vs off {database} {mode}: {a:.1f} vs {b:.1f} steps/s ({(a / b - 1) * 100:+.1f}%)"
                )


def _print_recovery(recovery: dict[str, dict[str, Any]]) -> None:
    for database, rec in recovery.items():
        verdict = "met" if rec["resume_s"] <= rec["lease_s"] + 1 else "MISSED"
        print(
            f"recovery {database}: SIGKILLed worker's run resumed {rec['resume_s']:.2f} s after the kill by a "
            f"newly started worker (lease {rec['lease_s']:g} s, {rec['lease_left_at_kill_s']:.2f} s of it left "
            f"at the kill; goal <= lease + 1 s): {verdict}; {rec['steps_recorded']}/{RECOVERY_STEPS} steps "
            f"recorded, output {'right' if rec['output_ok'] else 'WRONG'}, recoveries={rec['recoveries']}"
        )


def orchestrate(args: argparse.Namespace) -> int:
    databases = [d for d in DATABASES if args.db in (None, d)]
    if "postgresql" in databases and not args.pg_url:
        print("no --pg-url: skipping PostgreSQL", file=sys.stderr)
        databases.remove("postgresql")
    systems = [s for s in SYSTEMS if args.only in (None, s)]
    if args.observe and "crewline" in systems:
        systems.insert(systems.index("crewline") + 1, OBSERVED)
    results: dict[str, Any] = {"machine": machine(), "cases": {}, "recovery": {}}
    common = [
        "--seq-seconds",
        str(args.seq_seconds),
        "--conc-seconds",
        str(args.conc_seconds),
        "--warmup",
        str(args.warmup),
        "--inflight",
        str(args.inflight),
        "--baseline-seconds",
        str(args.baseline_seconds),
        "--paired-seconds",
        str(args.paired_seconds),
        "--loop",
        args.loop,
    ]
    for n in range(args.repeat):
        for database in databases:
            # Alternate who goes first, so neither system always gets the quieter moment.
            for system in systems if n % 2 == 0 else systems[::-1]:
                print(f"pass {n + 1}/{args.repeat}: {system} on {database} ...", file=sys.stderr)
                url = fresh_database(database, f"crewline_bench_{system}", args.pg_url)
                result = run_subcase(["--case", system, url, *common])
                results["cases"].setdefault(f"{system}:{database}", []).append(result)
    if "crewline" in systems and not args.no_recovery:
        for database in databases:
            print(f"recovery on {database} ...", file=sys.stderr)
            url = fresh_database(database, "crewline_bench_recovery", args.pg_url)
            results["recovery"][database] = asyncio.run(recovery(url, args.lease))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print_report(results, args)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pg-url", help="PostgreSQL URL of a role that may create databases")
    parser.add_argument("--db", choices=DATABASES, help="only this database")
    parser.add_argument("--only", choices=SYSTEMS, help="only this system")
    parser.add_argument("--seq-seconds", type=float, default=8.0, help="measured window, sequential")
    parser.add_argument("--conc-seconds", type=float, default=10.0, help="measured window, runs in flight")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds run before each window")
    parser.add_argument("--inflight", type=int, default=50, help="runs in flight for the concurrent mode")
    parser.add_argument("--baseline-seconds", type=float, default=2.0, help="each bare-commit measurement")
    parser.add_argument(
        "--paired-seconds", type=float, default=6.0, help="sequential runs alternating with bare commits"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="passes over every case; the table shows medians"
    )
    parser.add_argument("--lease", type=float, default=3.0, help="lease seconds for the recovery test")
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument(
        "--observe", action="store_true", help=f"also run crewline with its metrics on (system {OBSERVED})"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of every case, both systems alike (`crewline worker` and `serve` run on uvloop)",
    )
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--case", nargs=2, metavar=("SYSTEM", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--recovery-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recovery_worker:
        asyncio.run(recovery_worker(args.recovery_worker, args.lease))
        return 0
    if args.case:
        system, url = args.case
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(run_case(system, url, args))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
