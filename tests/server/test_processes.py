"""`crewline serve` and `crewline worker` as real processes: API-only servers sharing PostgreSQL with
separate workers, graceful shutdown that releases running runs, and the `crewline keys` commands."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import cli_env, crewline


def keys_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crewline", "keys", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_server(*args: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = crewline("serve", "--port", "0", *args, env=env, cwd=cwd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            url = found.group(1)
            break
    else:
        raise AssertionError(f"server exited with {proc.wait()} before listening")
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, url


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err or ""


def test_keys_commands(sqlite_url: str, tmp_path: Path) -> None:
    env = cli_env(sqlite_url)
    made = keys_cli(
        "create",
        "--scope",
        "proxy",
        "--name",
        "n8n",
        "--budget",
        "$5/day",
        "--rpm",
        "60",
        "--expires",
        "30d",
        env=env,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"crl_[0-9a-f]{12}_\S+", token) and "shown only this once" in made.stderr
    key_id = token.split("_")[1]
    listed = keys_cli("list", env=env, cwd=tmp_path)
    assert key_id in listed.stdout and "$5/day" in listed.stdout and token not in listed.stdout
    revoked = keys_cli("revoke", key_id, env=env, cwd=tmp_path)
    assert revoked.returncode == 0 and f"key {key_id} revoked" in revoked.stdout
    assert keys_cli("list", env=env, cwd=tmp_path).stdout.count(key_id) == 0
    everything = json.loads(keys_cli("list", "--all", "--json", env=env, cwd=tmp_path).stdout)
    assert [(k["id"], k["status"], k["budget_per_day"], k["rpm"]) for k in everything] == [
        (key_id, "revoked", 5.0, 60)
    ]
    for args, words in [
        (["create", "--scope", "proxy", "--budget", "lots"], "cannot read budget 'lots'"),
        (["create", "--scope", "proxy", "--expires", "soon"], "--expires"),
        (["revoke", "ffffffffffff"], "no API key with id ffffffffffff"),
        (["revoke", "nope"], "no API key has that id: a key id is 12 hex digits, the id column of "),
        (["revoke", "sk-live-0123456789"], "the id column of `crewline keys list`"),
    ]:
        proc = keys_cli(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "sk-live" not in keys_cli("revoke", "sk-live-0123456789", env=env, cwd=tmp_path).stderr
    # Pasting the whole key instead of its id works, and never prints the secret back.
    pasted = keys_cli("revoke", token, env=env, cwd=tmp_path)
    assert pasted.returncode == 0 and key_id in pasted.stdout and token not in pasted.stdout + pasted.stderr


@pytest.mark.pg
def test_api_servers_and_workers_share_postgresql(pg_url: str, tmp_path: Path) -> None:
    env = cli_env(pg_url)
    admin = keys_cli("create", "--scope", "admin", env=env, cwd=tmp_path).stdout.strip()
    servers = [start_server("--no-workers", env=env, cwd=tmp_path) for _ in range(2)]
    workers = [crewline("worker", "-c", "4", env=env, cwd=tmp_path, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        clients = [
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
            for _, url in servers
        ]
        ids = []
        for i in range(20):
            r = clients[i % 2].post(
                "/api/v1/runs", json={"workflow": "order", "input": {"id": f"o{i}", "amount": i}}
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["run_id"])
        deadline = time.monotonic() + 120
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            page = clients[0].get("/api/v1/runs", params={"state": "completed", "limit": 500}).json()
            pending -= {r["id"] for r in page["runs"]}
            time.sleep(0.1)
        assert not pending
        for i, rid in enumerate(ids):
            run = clients[1].get(f"/api/v1/runs/{rid}").json()
            assert run["output"] == {"id": f"o{i}", "total": 2 * i}
            assert [s["attempts"] for s in run["steps"]] == [1]
    finally:
        results = [stop(p) for p, _ in servers] + [stop(w) for w in workers]
    for code, err in results:
        assert code == 0, err
    assert all("crewline serve: stopped" in err for _, err in results[:2])


def test_sigterm_drains_the_in_process_worker(sqlite_url: str, tmp_path: Path) -> None:
    env = cli_env(sqlite_url)
    admin = keys_cli("create", "--scope", "admin", env=env, cwd=tmp_path).stdout.strip()
    proc, url = start_server("--concurrency", "2", env=env, cwd=tmp_path)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    rid = client.post("/api/v1/runs", json={"workflow": "slow"}).json()["run_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/runs/{rid}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, err = stop(proc)
    assert code == 0 and "crewline serve: stopped" in err, err
    # The run was parked at a step boundary and released, not left leased to a dead process.
    worker = crewline("worker", env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        proc2, url2 = start_server("--no-workers", env=env, cwd=tmp_path)
        client2 = httpx.Client(base_url=url2, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        deadline = time.monotonic() + 60
        while (run := client2.get(f"/api/v1/runs/{rid}").json())["status"] != "completed":
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
        assert run["output"] == 3 and run["recoveries"] == 0
        assert [s["attempts"] for s in run["steps"]] == [1, 1, 1]
        stop(proc2)
    finally:
        stop(worker)


def test_serve_reports_a_bad_configuration_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(
        '[webhooks.x]\nworkflow = "order"\nsecret_env = "NOT_SET_ANYWHERE"\n'
    )
    proc = crewline("serve", "--port", "0", env=cli_env(sqlite_url), cwd=tmp_path, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 2)
    assert "NOT_SET_ANYWHERE is not set" in err and "Traceback" not in err


@pytest.mark.parametrize("access_log", [True, False])
def test_the_server_log_tells_what_runs_do_and_requests_only_when_asked(
    sqlite_url: str, tmp_path: Path, access_log: bool
) -> None:
    env = cli_env(sqlite_url)
    admin = keys_cli("create", "--scope", "admin", env=env, cwd=tmp_path).stdout.strip()
    proc, url = start_server(*(["--access-log"] if access_log else []), env=env, cwd=tmp_path)
    try:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        rid = client.post(
            "/api/v1/runs", json={"workflow": "order", "input": {"id": "o-secret-77", "amount": 5}}
        )
        run_id = rid.json()["run_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/runs/{run_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        code, log = stop(proc)
    assert code == 0, log
    assert f"run {run_id} (order) started" in log and f"run {run_id} (order) completed in " in log
    assert ('"POST /api/v1/runs HTTP/1.1" 201' in log) is access_log
    assert admin not in log and admin.split("_", 2)[2] not in log and "o-secret-77" not in log
