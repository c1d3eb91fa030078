"""The chaos benchmark's small configuration (``bench/chaos.py``): 60 runs on two worker processes and one
API node over a PostgreSQL of the test's own, while workers are SIGKILLed, PostgreSQL restarts, database
connections are cut and 30% of upstream calls fail. The goals are the benchmark's: every run completes, no
finished model call is paid twice, no irreversible effect happens twice, no secret is written anywhere.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

from crewline import App, Settings

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "chaos.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
def test_sixty_runs_hold_their_goals_while_everything_fails(tmp_path: Path) -> None:
    chaos = load_bench()
    cfg = chaos.Config(
        runs=60, workers=2, kill_every=5.0, pg_restarts=1, drain_timeout=300.0, workdir=tmp_path
    )
    report = chaos.run(cfg)
    print(report.table())
    print("\n".join(sorted(report.timeline)))
    assert report.statuses["completed"] == 60, (report.statuses, report.timeline)
    assert report.started_twice == 0
    # the faults did happen, so the goals below were tested under them
    assert report.kills >= 1 and report.pg_restarts == 1 and report.connections_cut >= 1
    assert report.upstream_failed >= 10
    assert report.approvals_decided == 20
    # a finished ctx.llm is never paid twice: each call answered once, unless a fault caught it in flight
    assert report.model_calls_answered >= 120
    assert report.repeated_beyond_in_flight == 0
    # every shipped run delivered two effects, each once; an unknown outcome was settled by the operator
    assert report.effects == 120 and report.duplicated_effects == 0
    assert sum(report.unknown_resolved.values()) >= report.unknown_parked
    assert report.cron_fired >= 3 and report.cron_doubled == 0
    assert report.secrets_found == []
    assert report.scanned["tables"] >= 20 and report.scanned["trace exports"] >= 1
    assert report.scanned["log files"] >= 3


@pytest.mark.timeout(300)
def test_cron_fires_once_per_tick_while_four_workers_are_killed_and_restarted(
    pg_url: str, tmp_path: Path
) -> None:
    """A two-second schedule on four `crewline worker` processes, one SIGKILLed and replaced every few
    seconds: every tick in the window starts exactly one run, none is skipped, and every run completes."""
    ticks_file = tmp_path / "ticks.txt"
    env = {
        **os.environ,
        "CREWLINE_DATABASE_URL": pg_url,
        "CREWLINE_LEASE_SECONDS": "1.5",
        "CREWLINE_POLL_INTERVAL": "0.05",
        "CRON_TICKS_FILE": str(ticks_file),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }

    def worker() -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "crewline", "worker", "--app", "tests.workers.cron_app:app", "-c", "4"]
        return subprocess.Popen(
            args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    rng = random.Random(5)
    workers = [worker() for _ in range(4)]
    kills = 0
    try:
        while not ticks_file.exists():  # the workers are up
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.5, 3.5))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.append(worker())
        time.sleep(4)  # the last runs finish
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(60)
    app = App(settings=Settings(database_url=pg_url))
    try:
        runs = app.db.query(
            lambda c: c.all("SELECT id, status FROM runs WHERE workflow = 'ticker' ORDER BY id")
        )
    finally:
        app.close()
    ticks = sorted(
        datetime.strptime(rid.rpartition(":")[2], "%Y%m%dT%H%M%S%z").timestamp() for rid, _ in runs
    )
    assert kills >= 8 and len(ticks) >= 15
    assert len(set(ticks)) == len(ticks)
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps == {2.0}, f"ticks skipped or doubled: {ticks}"
    assert {status for _, status in runs} == {"completed"}
    noted = ticks_file.read_text().split()
    assert set(noted) == {rid for rid, _ in runs}
