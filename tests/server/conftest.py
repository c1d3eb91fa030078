"""Real servers for the tests: uvicorn on a loopback port in a thread, or `crewline serve` processes."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from crewline import App, Settings
from crewline.server import ServerConfig, create_app
from crewline.server.connections import HttpParser, uvicorn_config
from crewline.server.keys import create_key

from .sample_app import build

ROOT = Path(__file__).resolve().parents[2]
HOOK_SECRET = b"whsec-test-0123456789"


def make_app(db_url: str, tmp_path: Path, sections: dict[str, Any] | None = None) -> App:
    settings = Settings(
        database_url=db_url, project_dir=tmp_path, poll_interval=0.02, sections=sections or {}
    )
    return build(App(settings=settings))


@contextmanager
def serving(
    app: App,
    config: ServerConfig | None = None,
    workers: int = 4,
    http: HttpParser = "httptools",
    loop: str = "auto",
) -> Iterator[str]:
    """Run the server for ``app`` on a free loopback port, as `crewline serve` runs it; yields its base URL."""
    config = config or ServerConfig.from_settings(app.settings)
    api = create_app(app, config=config, workers=workers)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(api, config, http, log_level="warning", lifespan="on", loop=loop))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def new_key(app: App, scope: str, **options: Any) -> str:
    _, token = app.db.run(lambda conn: create_key(conn, scope=scope, **options))
    return token


class Api:
    """An httpx client on a running server, holding an admin key and making keys of other scopes."""

    def __init__(self, app: App, url: str) -> None:
        self.app = app
        self.url = url
        self.admin = new_key(app, "admin")
        self.http = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {self.admin}"})

    def key(self, scope: str, **options: Any) -> str:
        return new_key(self.app, scope, **options)

    def as_key(self, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.http.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] in statuses or time.monotonic() > deadline:
                return run
            time.sleep(0.02)


def hook_sections(**hook: Any) -> dict[str, Any]:
    return {"webhooks": {"orders": {"workflow": "order", "secret_env": "TEST_HOOK_SECRET", **hook}}}


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK_SECRET.decode())


@pytest.fixture
def api_factory(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start a server (one per call) on the test's database; closed at the end of the test."""
    stack: list[Any] = []

    def start(sections: dict[str, Any] | None = None, workers: int = 4, **config: Any) -> Api:
        app = make_app(db_url, tmp_path, sections)
        base = ServerConfig.from_settings(app.settings)
        cfg = dataclasses.replace(base, **{"key_cache": 0.0, **config})
        ctx = serving(app, cfg, workers)
        url = ctx.__enter__()
        stack.append(ctx)
        return Api(app, url)

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `crewline` subprocess: this tree's sources first, ahead of any installed copy."""
    return {
        **os.environ,
        "CREWLINE_DATABASE_URL": db_url,
        "CREWLINE_POLL_INTERVAL": "0.02",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "CREWLINE_APP": "tests.server.sample_app:app",
        **extra,
    }


def crewline(*args: str, env: dict[str, str], cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "crewline", *args], env=env, cwd=cwd, text=True, **kwargs)
