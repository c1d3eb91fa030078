"""The `crewline` command end to end: real processes, real database, the example app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crewline import App

ROOT = Path(__file__).resolve().parents[1]
# This checkout's sources first, whatever else the environment has installed.
SOURCES = os.pathsep.join((str(ROOT / "src"), str(ROOT)))


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "CREWLINE_DATABASE_URL": sqlite_url,
        "CREWLINE_APP": "examples.app:app",
        "CREWLINE_POLL_INTERVAL": "0.05",
        "PYTHONPATH": SOURCES,
        "CREWLINE_PROJECT": str(tmp_path),
    }

    def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "crewline", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check is not None:
            assert proc.returncode == check, proc.stderr
        return proc

    run.env = env  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "nosuch"],
            "unknown workflow 'nosuch' (known: daily_digest, lead_followup, onboard, summarize_ticket, triage_email)",
        ),
        (["run", "onboard", "--input", "{bad"], "--input is not valid JSON"),
        (
            ["run", "onboard", "--input", '{"id": "c1", "email": "nope"}'],
            "input for workflow onboard is not valid: email",
        ),
        (["run", "onboard", "--input", "@missing.json"], "cannot read --input file missing.json"),
        (["runs", "show", "nope"], "no run with id 'nope'"),
        (
            ["run", "onboard", "--input", "[" * 50_000 + "]" * 50_000],
            "--input is not valid JSON: nested more than 64",
        ),
        (
            [
                "runs",
                "resolve",
                "nope",
                "--step",
                "1",
                "--outcome",
                "done",
                "--output",
                "[" * 230 + "]" * 230,
            ],
            "--output is not valid JSON: nested more than 64 levels deep",
        ),
        (["runs", "resolve", "nope", "--step", "1", "--outcome", "done"], "no run with id 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_no_run(cli, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    proc = cli(*args, check=2)
    assert proc.stderr.strip().startswith("crewline: error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_run_wait_with_a_worker_then_inspect_fork_and_cancel(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = subprocess.Popen(
        [sys.executable, "-m", "crewline", "worker", "-c", "4"],
        env=cli.env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        (tmp_path / "in.json").write_text('{"id": "c7", "email": "ada@example.com"}')
        rid = cli("run", "onboard", "--input", "@in.json").stdout.strip()
        deadline = time.monotonic() + 30
        while "event:activated" not in cli("runs", "list").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        listed = json.loads(cli("runs", "list", "--state", "waiting", "--json").stdout)
        assert [r["id"] for r in listed] == [rid]
        shown = cli("runs", "show", rid).stdout
        assert "send_welcome" in shown and "irreversible" in shown and "waiting" in shown
        detail = json.loads(cli("runs", "show", rid, "--json").stdout)
        assert [s["status"] for s in detail["steps"]] == ["done", "done", "waiting"]
        fork = cli("runs", "fork", rid, "--from", "3").stdout.strip()
        assert json.loads(cli("runs", "show", fork, "--json").stdout)["forked_from"] == rid
        assert cli("runs", "cancel", rid).stdout.strip() == "cancelled"
        assert "already cancelled" in cli("runs", "cancel", rid, check=2).stderr
        done = cli("run", "daily_digest", "--wait", "--timeout", "30s", "--json")
        assert json.loads(done.stdout)["status"] == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    assert (tmp_path / ".crewline/outbox/welcome-c7.json").exists()


def test_run_wait_prints_the_error_of_a_failed_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app_file = tmp_path / "failing.py"
    app_file.write_text(
        "from crewline import App, Context\napp = App()\n"
        "async def boom() -> None:\n    raise RuntimeError('card declined')\n"
        "@app.workflow()\nasync def charge(ctx: Context) -> None:\n"
        "    from crewline import RetryPolicy\n    await ctx.step(boom, retry=RetryPolicy(max_attempts=1))\n"
    )
    env = {**cli.env, "CREWLINE_APP": "failing:app", "PYTHONPATH": os.pathsep.join((str(tmp_path), SOURCES))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "crewline", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "crewline", "run", "charge", "--wait"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        worker.terminate()
        worker.wait(20)
    assert proc.returncode == 1
    assert "failed: RuntimeError: card declined (step 1)" in proc.stderr


def test_fork_onto_an_existing_run_id_is_refused(cli) -> None:  # type: ignore[no-untyped-def]
    for rid, who in (("first", "c1"), ("second", "c2")):
        cli("run", "onboard", "--id", rid, "--input", json.dumps({"id": who, "email": f"{who}@example.com"}))
    proc = cli("runs", "fork", "first", "--from", "1", "--id", "second", check=2)
    assert proc.stderr == (
        "crewline: error: a run with id 'second' already exists; leave the id out or choose a new one\n"
    )
    shown = json.loads(cli("runs", "show", "second", "--json").stdout)
    assert shown["forked_from"] is None and shown["steps"] == []
    assert len(json.loads(cli("runs", "list", "--json").stdout)) == 2


def test_a_run_whose_stored_input_cannot_be_read_is_shown(cli, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    rid = cli("run", "onboard", "--input", '{"id": "c1", "email": "c1@example.com"}').stdout.strip()
    app = App(sqlite_url)
    try:
        app.db.run(
            lambda c: c.execute("UPDATE runs SET input = ? WHERE id = ?", ("[" * 230 + "]" * 230, rid))
        )
    finally:
        app.close()
    shown = cli("runs", "show", rid)
    assert 'input     {"unreadable": "the stored JSON cannot be read' in shown.stdout
    assert "cannot be read" in json.loads(cli("runs", "show", rid, "--json").stdout)["input"]["unreadable"]


def test_db_upgrade_status_and_prune(cli) -> None:  # type: ignore[no-untyped-def]
    first = cli("db", "upgrade").stdout
    assert "applied engine 1: runs, steps, events, blobs" in first and first.endswith("migrations applied\n")
    assert cli("db", "upgrade").stdout == "schema is up to date\n"
    status = cli("db", "status").stdout
    assert "engine" in status and "pending" not in status
    assert cli("prune", "--older-than", "30d").stdout.startswith("nothing to prune")
    assert "cannot read duration" in cli("prune", "--older-than", "soon", check=2).stderr


def test_a_file_that_is_not_a_database_is_an_error_not_a_traceback(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "notes.txt").write_text("meeting notes, not a database " * 20)
    env = {**cli.env, "CREWLINE_DATABASE_URL": "sqlite:///notes.txt"}
    proc = subprocess.run(
        [sys.executable, "-m", "crewline", "runs", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "the database answered: file is not a database" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("flag", "loop"), [([], "uvloop"), (["--loop", "asyncio"], "asyncio")])
def test_worker_runs_on_uvloop_unless_told_otherwise(cli, tmp_path: Path, flag: list[str], loop: str) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("uvloop")
    worker = subprocess.Popen(
        [sys.executable, "-m", "crewline", "worker", *flag],
        env=cli.env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        line = next(line for line in worker.stderr if line.startswith("worker "))
        assert line.rstrip().endswith(f"event loop {loop}")
        assert cli("run", "daily_digest", "--wait", "--timeout", "30s").returncode == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0


def test_an_unknown_event_loop_is_a_usage_error(cli) -> None:  # type: ignore[no-untyped-def]
    assert "Invalid value for '--loop'" in cli("worker", "--loop", "trio", check=2).stderr
