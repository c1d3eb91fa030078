"""`crewline db backup` in the middle of a busy run and `crewline db restore` into a fresh database:
a worker started on the restored copy brings every run to the same output as the original."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewline import App, Settings
from tests._pg import fresh_database, server_url

from .backup_app import build

ROOT = Path(__file__).resolve().parents[2]
RUNS, STEPS = 6, 60
TOTAL = sum(STEPS + i for i in range(RUNS))  # steps of all the runs together


def env_for(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CREWLINE_DATABASE_URL": url,
        "CREWLINE_POLL_INTERVAL": "0.02",
        "CREWLINE_LEASE_SECONDS": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "CREWLINE_APP": "tests.store.backup_app:app",
    }


def db_cli(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crewline", "db", *args],
        env=env_for(url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def app_on(url: str, cwd: Path) -> App:
    return build(App(settings=Settings(database_url=url, project_dir=cwd)))


def steps_done(app: App, run_ids: list[str]) -> int:
    async def count() -> int:
        return sum([len(await app.steps(rid)) for rid in run_ids])

    return asyncio.run(count())


def outputs(app: App, run_ids: list[str], timeout: float = 180) -> dict[str, object]:
    async def wait() -> dict[str, object]:
        return {rid: await app.result(rid, timeout=timeout) for rid in run_ids}

    return asyncio.run(wait())


def worker(url: str, cwd: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "crewline", "worker", "-c", "8"]
    return subprocess.Popen(args, env=env_for(url), cwd=cwd, text=True, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A source database and an empty target of the same kind (a fresh directory, a fresh database)."""
    if request.param == "sqlite":
        yield (
            f"sqlite:///{tmp_path / 'live' / 'crewline.db'}",
            f"sqlite:///{tmp_path / 'fresh' / 'crewline.db'}",
        )
        return
    server = server_url()
    with fresh_database(server) as source, fresh_database(server) as target:
        yield source, target


def test_a_backup_taken_mid_run_restores_and_resumes_to_the_same_outputs(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = two_databases
    original = app_on(source, tmp_path)
    run_ids = [asyncio.run(original.start("squares", STEPS + i)) for i in range(RUNS)]
    busy = worker(source, tmp_path)
    try:
        while steps_done(original, run_ids) < RUNS * 5:
            assert busy.poll() is None, "the worker exited"
            time.sleep(0.05)
        made = db_cli("backup", str(tmp_path / "backup.db"), url=source, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        want = outputs(original, run_ids)
    finally:
        stop(busy)
    assert want == {
        rid: {"n": STEPS + i, "total": sum(k * k for k in range(STEPS + i))} for i, rid in enumerate(run_ids)
    }

    again = db_cli("backup", str(tmp_path / "backup.db"), url=source, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr

    restored = db_cli("restore", str(tmp_path / "backup.db"), url=target, cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    copy = app_on(target, tmp_path)
    mid = steps_done(copy, run_ids)
    assert 0 < mid < TOTAL  # the copy holds the runs as the backup caught them: part-way
    resumed = worker(target, tmp_path)
    try:
        assert outputs(copy, run_ids) == want
    finally:
        stop(resumed)

    # The restored database is no longer empty: a second restore must be asked for explicitly.
    refused = db_cli("restore", str(tmp_path / "backup.db"), url=target, cwd=tmp_path)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    forced = db_cli("restore", "--force", str(tmp_path / "backup.db"), url=target, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert steps_done(app_on(target, tmp_path), run_ids) == mid
