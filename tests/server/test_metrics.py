"""``GET /metrics`` on the server and on `crewline worker --metrics-port`, and a real Prometheus scraping a
`crewline serve` process: its PromQL answers count the proxied calls and what they cost."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from crewline.testing import FakeProvider

from .conftest import Api, cli_env, crewline
from .test_processes import keys_cli, start_server, stop

PRICE = {"input": 1000.0, "output": 1000.0}  # $0.001 a token


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeProvider(api_key="sk-test") as server:
        yield server


def models(fake: FakeProvider) -> dict[str, Any]:
    return {
        "providers": {"up": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}},
        "aliases": {"fast": "up/gpt-test"},
        "prices": {"up/gpt-test": PRICE},
        "retry": {"attempts": 1},
    }


def test_metrics_are_open_by_default_and_behind_a_bearer_token_when_one_is_set(
    api_factory: Callable[..., Api], fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_api = api_factory({"models": models(fake)}, workers=0)
    fake.reply("hi", input_tokens=3, output_tokens=2)
    client = openai.OpenAI(api_key=open_api.key("proxy"), base_url=f"{open_api.url}/v1", max_retries=0)
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    scraped = httpx.get(f"{open_api.url}/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'crewline_model_calls_total{key="' in scraped.text and 'model="up/gpt-test"' in scraped.text
    assert "gen_ai_client_operation_duration_seconds_bucket" in scraped.text

    monkeypatch.setenv("METRICS_TOKEN", "s3cret-metrics")
    guarded = api_factory({"observe": {"metrics_token_env": "METRICS_TOKEN"}}, workers=0)
    refused = httpx.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and "metrics_token_env" in refused.json()["error"]["message"]
    assert "s3cret" not in refused.text
    ok = httpx.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert ok.status_code == 200 and "crewline_runs" in ok.text


def test_a_missing_metrics_token_is_a_configuration_error_naming_the_field(
    sqlite_url: str, tmp_path: Path
) -> None:
    (tmp_path / "crewline.toml").write_text('[observe]\nmetrics_token_env = "NO_SUCH_METRICS_TOKEN"\n')
    proc = crewline(
        "worker", "--metrics-port", "1", env=cli_env(sqlite_url), cwd=tmp_path, stderr=subprocess.PIPE
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert "[observe] metrics_token_env names NO_SUCH_METRICS_TOKEN, which is not set" in err


def test_a_worker_serves_its_metrics_on_its_own_port(sqlite_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = cli_env(sqlite_url)
    worker = crewline("worker", "--metrics-port", str(port), env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.TransportError:
                assert worker.poll() is None and time.monotonic() < deadline, (
                    "the worker did not serve metrics"
                )
                time.sleep(0.1)
        assert scraped.status_code == 200 and "crewline_review_queue_size 0.0" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
    finally:
        stop(worker)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None
    )
    if found is None:
        if os.environ.get("CREWLINE_REQUIRE_PG"):
            pytest.fail(
                "the prometheus binary is missing: scripts/setup installs it (apt package prometheus)"
            )
        pytest.skip("the prometheus binary is missing (scripts/setup installs it with apt)")
    return found


def _query(prom: str, promql: str) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=10)
    if r.status_code == 503:  # Prometheus answers "Service Unavailable" until its storage is ready
        return None
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_crewline_serve_and_promql_counts_calls_and_cost(
    db_url: str, fake: FakeProvider, tmp_path: Path
) -> None:
    binary = _prometheus()
    provider = f'{{ format = "openai", base_url = "{fake.url}/v1", api_key_env = "FAKE_KEY" }}'
    (tmp_path / "crewline.toml").write_text(
        f'[models]\naliases = {{ fast = "up/gpt-test" }}\n[models.providers]\nup = {provider}\n'
        '[models.prices."up/gpt-test"]\ninput = 1000.0\noutput = 1000.0\n'
    )
    env = cli_env(db_url, FAKE_KEY="sk-test")
    token = keys_cli("create", "--scope", "proxy", env=env, cwd=tmp_path).stdout.strip()
    server, url = start_server("--no-workers", env=env, cwd=tmp_path)
    prom_port = _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: crewline\n    static_configs:\n"
        f"      - targets: ['{url.removeprefix('http://')}']\n"
    )
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = openai.OpenAI(api_key=token, base_url=f"{url}/v1", max_retries=0)
        for _ in range(3):
            fake.reply("hello", input_tokens=10, output_tokens=5)  # 15 tokens: $0.015 a call
            client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        base = f"http://127.0.0.1:{prom_port}"
        calls = cost = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                calls = _query(base, 'sum(crewline_model_calls_total{model="up/gpt-test",status="ok"})')
                cost = _query(base, "sum(crewline_model_cost_usd_total)")
            except httpx.TransportError:
                assert prom.poll() is None, prom.stderr.read() if prom.stderr else "prometheus exited"
            if calls == 3:
                break
            time.sleep(0.5)
        assert calls == 3 and cost == pytest.approx(0.045)
        up = _query(base, 'up{job="crewline"}')
        duration = _query(
            base, 'sum(gen_ai_client_operation_duration_seconds_count{gen_ai_request_model="fast"})'
        )
        assert up == 1 and duration == 3
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        stop(server)
