"""Which project and database the `crewline` command uses: found upward like git, named, or said aloud."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = (
    "from crewline import App, Context\n"
    "app = App()\n"
    "@app.workflow()\n"
    "async def hello(ctx: Context) -> str:\n"
    "    return 'hi'\n"
    "@app.workflow()\n"
    "async def ask(ctx: Context) -> str:\n"
    "    decision = await ctx.approve('ship it', preview={'x': 1}, risk='high')\n"
    "    return 'shipped' if decision.approved else 'kept'\n"
    "@app.workflow()\n"
    "async def activate(ctx: Context) -> object:\n"
    "    return await ctx.wait_for('activated', timeout='1h')\n"
)

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def crewline(tmp_path: Path) -> Cli:
    """Runs `crewline ARGS` in a directory, with no project, app or database named by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWLINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp_path / "repo"), str(ROOT)])

    def run(*args: str, cwd: Path, code: int = 0, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "crewline", *args],
            env={**env, **extra},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    return run


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose project lives in shop/ (crewline.toml, the app module), not at its root."""
    root = tmp_path / "repo"
    (root / "shop" / "deep" / "er").mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "app.py").write_text(APP)
    (root / "shop" / "crewline.toml").write_text('[crewline]\napp = "shop.app:app"\n')
    return root


def test_the_project_is_found_from_a_subdirectory(crewline: Cli, repo: Path) -> None:
    proc = crewline("run", "hello", cwd=repo / "shop" / "deep" / "er")
    assert (repo / "shop" / ".crewline" / "crewline.db").exists()
    assert not (repo / "shop" / "deep" / "er" / ".crewline").exists()
    assert "no crewline.toml" not in proc.stderr
    listed = crewline("runs", "list", cwd=repo / "shop" / "deep")
    assert proc.stdout.strip() in listed.stdout


@pytest.mark.parametrize("how", ["option", "env"])
def test_the_project_can_be_named(crewline: Cli, repo: Path, tmp_path: Path, how: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if how == "option":
        crewline("--project", str(repo / "shop"), "run", "hello", cwd=elsewhere)
    else:
        crewline("run", "hello", cwd=elsewhere, CREWLINE_PROJECT=str(repo / "shop"))
    assert (repo / "shop" / ".crewline" / "crewline.db").exists()
    assert not (elsewhere / ".crewline").exists()


def test_a_project_that_does_not_exist_is_a_usage_error(crewline: Cli, repo: Path) -> None:
    proc = crewline("--project", "nowhere", "runs", "list", cwd=repo, code=2)
    assert "nowhere" in proc.stderr and "does not exist" in proc.stderr


def test_the_app_module_locates_its_project_from_the_repository_root(crewline: Cli, repo: Path) -> None:
    crewline("run", "hello", "--app", "shop.app:app", cwd=repo)
    assert (repo / "shop" / ".crewline" / "crewline.db").exists()
    assert not (repo / ".crewline").exists()


def test_with_no_project_the_database_it_creates_is_named(crewline: Cli, repo: Path) -> None:
    proc = crewline("runs", "list", cwd=repo)
    assert "no crewline.toml in this directory or above" in proc.stderr
    assert "creating the database .crewline/crewline.db" in proc.stderr
    assert "--project shop" in proc.stderr
    again = crewline("runs", "list", cwd=repo)
    assert "using the database .crewline/crewline.db" in again.stderr


def test_a_run_nobody_will_execute_says_so(crewline: Cli, repo: Path) -> None:
    proc = crewline("run", "hello", cwd=repo / "shop")
    assert "no worker is running on the database .crewline/crewline.db" in proc.stderr
    assert "crewline worker" in proc.stderr
    waited = crewline("run", "hello", "--wait", "--timeout", "0.5s", cwd=repo / "shop", code=1)
    assert "still pending after 0.5s; no worker has claimed it (0 running on the database" in waited.stderr
    assert ".crewline/crewline.db" in waited.stderr


def test_a_crewline_toml_that_is_not_toml_is_a_usage_error_naming_the_file(crewline: Cli, repo: Path) -> None:
    (repo / "shop" / "crewline.toml").write_text("[models\nmax_tokens = 5\n")
    proc = crewline("runs", "list", cwd=repo / "shop" / "deep", code=2)
    assert proc.stderr.startswith("crewline: error: ../crewline.toml is not valid TOML: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_empty_object_is_no_input(crewline: Cli, repo: Path) -> None:
    crewline("run", "hello", "--input", "{}", cwd=repo / "shop")
    refused = crewline("run", "hello", "--input", '{"a": 1}', cwd=repo / "shop", code=2)
    assert "workflow hello takes no input" in refused.stderr


def test_timeout_without_wait_is_refused(crewline: Cli, repo: Path) -> None:
    proc = crewline("run", "hello", "--timeout", "5s", cwd=repo / "shop", code=2)
    assert "--timeout bounds --wait: add --wait" in proc.stderr
    assert "no crewline.toml" not in proc.stderr and not (repo / "shop" / ".crewline").exists()


@pytest.fixture
def worker(repo: Path) -> Iterator[None]:
    """A `crewline worker` on the shop project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWLINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(repo), str(ROOT)])
    env["CREWLINE_POLL_INTERVAL"] = "0.05"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crewline", "worker"], env=env, cwd=repo / "shop", stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.usefixtures("worker")
def test_wait_returns_when_the_run_waits_on_a_person(crewline: Cli, repo: Path) -> None:
    proc = crewline("run", "ask", "--wait", "--timeout", "5m", cwd=repo / "shop", code=3)
    review = proc.stdout.split("review ", 1)[1].split(" ", 1)[0]
    assert f"waits for a person: review {review} (ship it, risk high)" in proc.stdout
    assert f"`crewline review approve {review}`" in proc.stdout
    as_json = crewline("run", "ask", "--wait", "--json", cwd=repo / "shop", code=3)
    assert '"status": "waiting"' in as_json.stdout and '"action": "ship it"' in as_json.stdout
    crewline("review", "approve", review, cwd=repo / "shop")


@pytest.mark.usefixtures("worker")
def test_an_event_sent_from_the_cli_resumes_the_run(crewline: Cli, repo: Path) -> None:
    shop = repo / "shop"
    rid = crewline("run", "activate", cwd=shop).stdout.strip()
    deadline = time.monotonic() + 60
    while "event:activated" not in crewline("runs", "list", cwd=shop).stdout:
        assert time.monotonic() < deadline, "the run never waited for its event"
        time.sleep(0.1)
    sent = crewline("runs", "event", rid, "activated", "--payload", '{"plan": "pro"}', cwd=shop)
    assert sent.stdout.startswith(f"event activated sent to run {rid}")
    while json.loads(crewline("runs", "show", rid, "--json", cwd=shop).stdout)["status"] != "completed":
        assert time.monotonic() < deadline, "the run did not resume"
        time.sleep(0.1)
    assert json.loads(crewline("runs", "show", rid, "--json", cwd=shop).stdout)["output"] == {"plan": "pro"}
    bad = crewline("runs", "event", rid, "activated", "--payload", "{oops", cwd=shop, code=2)
    assert "--payload is not valid JSON" in bad.stderr


def test_serve_guide_prints_commands_that_work_from_where_it_started(crewline: Cli, repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWLINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(repo), str(ROOT)])
    env["CREWLINE_PROJECT"] = str(repo / "shop")
    server = subprocess.Popen(
        [sys.executable, "-m", "crewline", "serve", "--port", "0", "--guide"],
        env=env,
        cwd=repo,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        lines = []
        for line in server.stderr:
            lines.append(line)
            if "review approve" in line:
                break
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    guide = "".join(lines)
    url = guide.split("API ", 1)[1].split("/api/v1", 1)[0]
    assert f"interactive docs {url}/docs" in guide and "workflows: activate, ask, hello" in guide
    assert "crewline --project shop keys create --scope operator --name me" in guide
    assert "crewline --project shop run activate --wait" in guide
    listed = next(line for line in lines if "runs list" in line).split("#")[0].split()
    proc = crewline(*listed[1:], cwd=repo)
    assert "no crewline.toml" not in proc.stderr and proc.stdout.startswith("id")
