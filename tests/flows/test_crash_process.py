"""Durability against real process death: workers SIGKILLed at named crash points, and without warning."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crewline import App
from crewline.flows.recovery import Settlement

from . import crash_app
from ._drive import drive

ROOT = Path(__file__).resolve().parents[2]


def start_worker(
    db_url: str, *, crash_point: str | None = None, lease: float = 1.0, concurrency: int = 4, cwd: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CREWLINE_DATABASE_URL": db_url,
        "CREWLINE_LEASE_SECONDS": str(lease),
        "CREWLINE_POLL_INTERVAL": "0.05",
        # this checkout's sources first, whatever crewline the interpreter has installed
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("CREWLINE_CRASH_POINT", None)
    if crash_point:
        env["CREWLINE_CRASH_POINT"] = crash_point
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crewline",
            "worker",
            "--app",
            "tests.flows.crash_app:app",
            "-c",
            str(concurrency),
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def effects(log: Path) -> list[tuple[str, int, str, int, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        rid, step, phase, pid, ts = line.split()
        out.append((rid, int(step), phase, int(pid), float(ts)))
    return out


async def wait_status(app: App, run_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await app.get_run(run_id)
        if run.status in statuses:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run.status}, wanted {statuses}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("crash_point", "irreversible"),
    [("after_step_commit:2", None), ("before_run_completion", None), ("after_step_commit:3", 3)],
)
async def test_sigkill_at_a_crash_point_then_another_worker_finishes(
    db_url: str, tmp_path: Path, crash_point: str, irreversible: int | None
) -> None:
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("chain", {"log": str(log), "steps": 4, "irreversible_step": irreversible})
        first = start_worker(db_url, crash_point=crash_point, cwd=tmp_path)
        assert first.wait(60) == -signal.SIGKILL  # it died at the crash point
        assert (await app.get_run(rid)).status == "running"  # still leased by the dead worker
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(second)
        assert run.status == "completed" and run.output == [1, 2, 3, 4]
        assert run.recoveries == 1
        ends = Counter(step for _, step, phase, _, _ in effects(log) if phase == "end")
        assert ends == Counter({1: 1, 2: 1, 3: 1, 4: 1})  # each finished step ran exactly once
    finally:
        app.close()


async def test_sigkill_after_intent_leaves_outcome_unknown(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("chain", {"log": str(log), "steps": 3, "irreversible_step": 2})
        first = start_worker(db_url, crash_point="after_intent:2", cwd=tmp_path)
        assert first.wait(60) == -signal.SIGKILL
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("waiting",))
            assert run.wait_reason == "outcome unknown: step 2 (effect-2)"
            assert [s for _, s, phase, _, _ in effects(log) if phase == "end"] == [1]  # step 2 never called
            await app.resolve(rid, 2, "retry")
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(second)
        assert run.output == [1, 2, 3]
    finally:
        app.close()


async def test_sigkill_mid_rerun_resumes_it_with_the_earlier_attempt_intact(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("chain", {"log": str(log), "steps": 4, "checkpoint_after": 2})
        first = await drive(app, rid)
        kept = await app.steps(rid)
        assert await app.rerun(rid, "halfway") == (2, 3)
        # steps: 1 effect-1, 2 effect-2, 3 halfway, 4 effect-3, 5 effect-4; die once effect-3 is recorded
        dying = start_worker(db_url, crash_point="after_step_commit:4", cwd=tmp_path)
        assert dying.wait(60) == -signal.SIGKILL
        assert (await app.get_run(rid)).status == "running"
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(second)
        assert (run.status, run.output, run.attempt, run.recoveries) == ("completed", first.output, 2, 1)
        [earlier] = await app.attempts(rid)
        assert [s.to_json() for s in earlier.steps] == [s.to_json() for s in kept[2:]]
        assert [(s.step_no, s.name) for s in await app.steps(rid)] == [
            (n, s.name) for n, s in enumerate(kept, 1)
        ]
        ends = Counter(step for _, step, phase, _, _ in effects(log) if phase == "end")
        # effects 1-2 ran in the first attempt only; 3-4 once in each attempt, the crash notwithstanding
        assert ends == Counter({1: 1, 2: 1, 3: 2, 4: 2})
    finally:
        app.close()


async def test_two_workers_never_run_a_step_at_the_same_time(pg_url: str, tmp_path: Path) -> None:
    """Many runs, two worker processes on PostgreSQL, one of them SIGKILLed midway without warning."""
    log = tmp_path / "effects.log"
    app = crash_app.register(App(pg_url))
    try:
        ids = [await app.start("chain", {"log": str(log), "steps": 5, "pause": 0.02}) for _ in range(30)]
        workers = [start_worker(pg_url, cwd=tmp_path, concurrency=8) for _ in range(2)]
        await asyncio.sleep(1.0)
        workers[0].kill()
        workers.append(start_worker(pg_url, cwd=tmp_path, concurrency=8))
        try:
            for rid in ids:
                run = await wait_status(app, rid, ("completed", "failed"), timeout=120)
                assert run.output == [1, 2, 3, 4, 5]
        finally:
            for w in workers:
                stop(w)
        by_step: dict[tuple[str, int], list[tuple[str, int, float]]] = {}
        for rid, step, phase, pid, ts in effects(log):
            by_step.setdefault((rid, step), []).append((phase, pid, ts))
        assert len(by_step) == 30 * 5
        for key, marks in by_step.items():
            # Executions of one step never overlap in time: each start follows the previous one's end
            # (a step cut off by the kill has a start and no end, and is then run again by the survivor).
            starts = sorted(ts for phase, _, ts in marks if phase == "start")
            pids = {pid for _, pid, _ in marks}
            ends = [ts for phase, _, ts in marks if phase == "end"]
            assert len(ends) >= 1, key
            if len(starts) > 1:
                assert workers[0].pid in pids, f"{key} ran twice without its worker dying"
                assert starts[1] > max(ts for phase, pid, ts in marks if pid == workers[0].pid), key
    finally:
        app.close()


async def test_sigkill_while_pausing_and_while_paused_keeps_the_run_paused(
    db_url: str, tmp_path: Path
) -> None:
    """A worker dies as it pauses a run, the next pauses it, that one dies too: it stays paused, and once
    resumed every step runs exactly once."""
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("chain", {"log": str(log), "steps": 3, "pause": 1.0})
        first = start_worker(db_url, crash_point="before_pause", cwd=tmp_path)
        while not effects(log):
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            await asyncio.sleep(0.02)
        assert await app.steering.pause(rid) == "pause requested"
        assert first.wait(60) == -signal.SIGKILL  # died at the step boundary where it was to pause
        run = await app.get_run(rid)
        assert run.status == "running" and run.pause_requested
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("paused",))
        finally:
            second.kill()  # SIGKILL while the run is paused
            second.wait()
        assert run.lease_owner is None and run.recoveries == 1
        third = start_worker(db_url, cwd=tmp_path)
        try:
            for _ in range(20):  # a live worker polls many times and never takes it
                await asyncio.sleep(0.1)
                assert (await app.get_run(rid)).status == "paused"
            assert await app.steering.resume(rid) == "resumed"
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(third)
        assert run.output == [1, 2, 3]
        ends = Counter(step for _, step, phase, _, _ in effects(log) if phase == "end")
        assert ends == Counter({1: 1, 2: 1, 3: 1})
        steps = await app.steps(rid)
        assert [s.step_no for s in steps] == [1, 2, 3]
    finally:
        app.close()


async def test_sigkill_mid_compensation_runs_each_remaining_compensation_once(
    db_url: str, tmp_path: Path
) -> None:
    """Steps 1-3 reserve, step 4 fails, compensations are steps 5-7 (releasing 3, 2, 1): the worker dies
    right after step 5 commits; the next one releases 2 and 1, and 3 never again."""
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("undoable", {"log": str(log), "steps": 3})
        first = start_worker(db_url, crash_point="after_step_commit:5", cwd=tmp_path)
        first.wait(60)
        assert first.returncode == -signal.SIGKILL
        assert [s for _, s, phase, _, _ in effects(log) if phase == "release"] == [3]
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(second)
        releases = [(s, pid) for _, s, phase, pid, _ in effects(log) if phase == "release"]
        assert [s for s, _ in releases] == [3, 2, 1]
        assert releases[0][1] == first.pid and {pid for _, pid in releases[1:]} == {second.pid}
        assert run.error["compensated"] == [3, 2, 1]
        steps = await app.steps(rid)
        assert [(s.kind, s.status) for s in steps[4:]] == [("compensation", "done")] * 3
    finally:
        app.close()


async def test_a_failed_run_waits_in_review_across_a_worker_restart(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("reviewed", {"log": str(log), "steps": 2})
        first = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("waiting", "failed", "completed"))
        finally:
            first.kill()
            first.wait(20)
        assert (run.wait_reason or "").startswith("failure:")
        second = start_worker(db_url, cwd=tmp_path)
        try:
            [req] = await app.reviews.list(run_id=rid)
            assert req.kind == "failure" and req.step_no == 3
            assert req.preview["error"]["message"] == "the supplier refused the order"
            Path(str(log) + ".fixed").touch()
            await app.reviews.settle(req.id, Settlement("retry", "ada"))
            run = await wait_status(app, rid, ("completed", "failed"))
        finally:
            stop(second)
        assert run.output == "ordered"
        assert [s for _, s, phase, _, _ in effects(log)] == [1, 2]  # reserved once each, never released
        assert [r.status for r in await app.reviews.list(run_id=rid, status=None)] == ["resolved"]
    finally:
        app.close()


def _charges(log: Path, phase: str) -> list[str]:
    return [p for _, _, p, _, _ in effects(log) if p.startswith(phase)]


async def test_a_reconcile_check_settles_a_charge_a_sigkill_left_unknown(db_url: str, tmp_path: Path) -> None:
    """The worker dies right after the charge: the check finds it in the ledger, nothing is charged twice."""
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("billing", {"log": str(log), "die": True})
        first = start_worker(db_url, cwd=tmp_path)
        assert first.wait(60) == -signal.SIGKILL
        assert [s.status for s in await app.steps(rid)] == ["done", "intent"]
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("completed", "failed", "waiting"))
        finally:
            stop(second)
        key = f"{rid}:2"
        assert run.status == "completed" and run.output == ["1", f"charged {key}", "3"]
        assert _charges(log, "charge") == [f"charge:{key}"] and _charges(log, "check") == [f"check:{key}"]
        steps = await app.steps(rid)
        assert [(s.kind, s.name, s.status) for s in steps] == [
            ("step", "prepare", "done"),
            ("step", "charge", "done"),
            ("reconcile", "reconcile charge", "done"),
            ("step", "receipt", "done"),
        ]
        assert steps[2].output == {"status": "done", "output": f"charged {key}"}
    finally:
        app.close()


async def test_a_reconcile_check_that_finds_nothing_runs_the_charge_again(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    app = crash_app.register(App(db_url))
    try:
        rid = await app.start("billing", {"log": str(log)})
        first = start_worker(db_url, crash_point="after_intent:2", cwd=tmp_path)
        assert first.wait(60) == -signal.SIGKILL
        second = start_worker(db_url, cwd=tmp_path)
        try:
            run = await wait_status(app, rid, ("completed", "failed", "waiting"))
        finally:
            stop(second)
        key = f"{rid}:2"
        assert run.status == "completed" and run.output == ["1", f"charged {key}", "3"]
        assert _charges(log, "charge") == [f"charge:{key}"]  # once: the intent was all the first worker did
        assert [s.name for s in await app.steps(rid)] == ["prepare", "charge", "reconcile charge", "receipt"]
    finally:
        app.close()
