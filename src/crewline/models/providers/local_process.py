"""The local provider's llama.cpp server process: started tied to this process's life, stopped, reaped.

The server runs under ``_llama_child.py``, which exits when this process's end of its stdin pipe closes,
so a crewline killed with SIGKILL takes its server with it. As a second line, each server's pid is
written to a pid file in a per-user directory; a later start kills any server listed there whose
crewline is gone, after checking (on Linux, through ``/proc``) that the pid still names the very process
that was started, so a reused pid is never killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["reap_stale", "spawn", "stop"]

_CHILD = Path(__file__).with_name("_llama_child.py")


def pid_dir() -> Path:
    """``$XDG_RUNTIME_DIR/crewline``, else ``crewline-<uid>`` in the temp directory: private to the user."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "crewline" if runtime else Path(tempfile.gettempdir()) / f"crewline-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def spawn(args: list[str], directory: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``llama_cpp.server`` with ``args``, tied to this process, and note it in a pid file."""
    proc = subprocess.Popen(
        [sys.executable, str(_CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C meant for the parent reaches the child only through the parent
    )
    record = {"pid": proc.pid, "parent": os.getpid(), "started": _start_time(proc.pid)}
    (directory or pid_dir()).joinpath(f"llama-{proc.pid}.pid").write_text(json.dumps(record))
    return proc


def stop(proc: subprocess.Popen[bytes], directory: Path | None = None) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(OSError):
        (directory or pid_dir()).joinpath(f"llama-{proc.pid}.pid").unlink()


def reap_stale(directory: Path | None = None) -> list[int]:
    """Kill the servers listed in pid files whose crewline process is gone; returns their pids."""
    killed = []
    for path in sorted((directory or pid_dir()).glob("llama-*.pid")):
        try:
            record = json.loads(path.read_text())
            pid, parent, started = int(record["pid"]), int(record["parent"]), record.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(parent) and parent != os.getpid():
            continue  # another crewline still owns it
        if _ours(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        with contextlib.suppress(OSError):
            path.unlink()
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) != "Z"


def _ours(pid: int, started: object) -> bool:
    """Whether ``pid`` is still the llama server we started (same start time, our child script)."""
    if started is None or _start_time(pid) != started:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(_CHILD).encode() in cmdline


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields after the command name, which may hold spaces


def _state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None off Linux."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None
