"""The database restarting under a real `crewline serve`: requests answer 503 with Retry-After (in the
API's shape and the proxy protocols'), /readyz goes red and back to green on its own, the connection pool
recovers without a restart, and every run accepted before the outage completes after it.

The server runs on a PostgreSQL cluster of this test's own (:class:`tests._pg.Cluster`), so that stopping
it disturbs no other test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests._pg import own_cluster

from .conftest import cli_env
from .test_processes import keys_cli, start_server, stop


class Load:
    """A client starting runs and reading them back in a loop, recording every answer it gets."""

    def __init__(self, url: str, admin: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        self.accepted: list[str] = []
        self.answers: list[httpx.Response] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            r = self.http.post("/api/v1/runs", json={"workflow": "slow"})
            self.answers.append(r)
            if r.status_code == 201:
                self.accepted.append(r.json()["run_id"])
                self.answers.append(self.http.get(f"/api/v1/runs/{r.json()['run_id']}"))
            time.sleep(0.05)


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    error = r.json()["error"]
    assert error["type"] == "database_unavailable" and "retry after" in error["message"], error
    assert "postgresql://" not in error["message"] and "/tmp" not in error["message"]


@pytest.mark.pg
def test_a_database_restart_under_serve_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    with own_cluster() as pg:
        env = cli_env(pg.url)
        admin = keys_cli("create", "--scope", "admin", env=env, cwd=tmp_path).stdout.strip()
        proxy_key = keys_cli("create", "--scope", "proxy", env=env, cwd=tmp_path).stdout.strip()
        proc, url = start_server("--concurrency", "4", env=env, cwd=tmp_path)
        try:
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
            load = Load(url, admin)
            load.thread.start()
            while len(load.accepted) < 6:
                time.sleep(0.05)
            pg.stop()  # runs mid-step, requests in flight
            # Every kind of caller is told to come back later, promptly and in its own shape.
            assert_unavailable(client.post("/api/v1/runs", json={"workflow": "slow"}))
            assert_unavailable(client.get("/api/v1/runs"))
            ready = httpx.get(f"{url}/readyz", timeout=60)
            assert ready.status_code == 503 and ready.headers["retry-after"]
            assert ready.json()["error"]["type"] == "database_unavailable"
            assert "PostgreSQL database" in ready.json()["error"]["message"]
            oa = openai.OpenAI(base_url=f"{url}/v1", api_key=proxy_key, max_retries=0, timeout=60)
            with pytest.raises(openai.APIStatusError) as raised:
                oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert raised.value.status_code == 503 and raised.value.response.headers["retry-after"]
            assert raised.value.code == "service_unavailable"
            an = anthropic.Anthropic(base_url=url, api_key=proxy_key, max_retries=0, timeout=60)
            with pytest.raises(anthropic.APIStatusError) as refused:
                an.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"]
            assert refused.value.body["error"]["type"] == "api_error"  # type: ignore[index]
            time.sleep(1.0)
            pg.start()
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/readyz", timeout=60).status_code != 200:
                assert time.monotonic() < deadline, "readyz did not turn green after the database returned"
                time.sleep(0.1)
            time.sleep(0.5)  # a few more runs accepted after the outage
            load.stopping.set()
            load.thread.join(timeout=120)
            for r in load.answers:
                assert r.status_code in (200, 201) or (r.status_code == 503 and r.headers["retry-after"]), (
                    r.text
                )
            assert any(r.status_code == 503 for r in load.answers)  # the load did meet the outage
            deadline = time.monotonic() + 120
            pending = set(load.accepted)
            while pending and time.monotonic() < deadline:
                pending = {
                    rid
                    for rid in pending
                    if client.get(f"/api/v1/runs/{rid}").json()["status"] != "completed"
                }
                time.sleep(0.2)
            assert not pending, f"{len(pending)} of {len(load.accepted)} accepted runs did not complete"
            for rid in load.accepted:
                assert client.get(f"/api/v1/runs/{rid}").json()["output"] == 3
            # A run refused with 503 left nothing behind: every run in the database was accepted.
            listed = client.get("/api/v1/runs", params={"limit": 500}).json()["runs"]
            assert {r["id"] for r in listed if r["workflow"] == "slow"} == set(load.accepted)
        finally:
            code, log = stop(proc)
        assert code == 0, log
        assert log.count("is unreachable") == 1 and log.count("reachable again") == 1, log
        # No request failed with a 500, which the server logs as "error serving" with its traceback (a
        # plain " 500" would also match a run id that begins with those digits).
        assert "Traceback" not in log and "error serving" not in log, log
