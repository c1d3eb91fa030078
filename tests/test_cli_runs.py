"""`crewline runs` and `crewline prune` end to end: runs made in-process, inspected by the real command."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App, Context, Settings

from .flows._drive import drive
from .test_cli import cli  # noqa: F401  (the fixture)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    a = App(settings=Settings().with_(database_url=sqlite_url))

    async def shout(text: str) -> str:
        return text.upper()

    @a.workflow()
    async def echo(ctx: Context, text: str) -> Any:
        return {"said": await ctx.step(shout, text)}

    yield a
    a.close()


def on_terminal(env: dict[str, str], cwd: Path, *args: str, answer: bytes) -> tuple[int, str]:
    """Run crewline with a pseudo-terminal as stdin and stdout, typing ``answer``."""
    main, tty = pty.openpty()
    command = [sys.executable, "-m", "crewline", *args]
    proc = subprocess.Popen(command, stdin=tty, stdout=tty, stderr=tty, env=env, cwd=cwd)
    os.close(tty)
    os.write(main, answer)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(60), out.decode()


async def test_prune_has_a_dry_run_asks_first_and_a_pruned_run_says_so(app: App, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    old = await app.start("echo", "hello")
    await drive(app, old)
    recent = await app.start("echo", "fresh")
    await drive(app, recent)
    three_days_ago = time.time() - 3 * 86400
    await app.db.write(
        lambda c: c.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (three_days_ago, old))
    )

    dry = cli("prune", "--older-than", "1d", "--dry-run").stdout
    assert dry.startswith("would prune 1 runs' input and output, 1 steps, 0 events")
    refused = cli("prune", "--older-than", "1d", check=2).stderr
    assert "not a terminal" in refused and "pass --yes" in refused and "--dry-run" in refused
    code, out = on_terminal(cli.env, tmp_path, "prune", "--older-than", "1d", answer=b"n\n")
    assert code == 1 and "prune 1 runs' input and output" in out and "nothing pruned" in out
    assert (await app.get_run(old)).input == "hello" and len(await app.steps(old)) == 1

    code, out = on_terminal(cli.env, tmp_path, "prune", "--older-than", "1d", answer=b"y\n")
    assert code == 0 and "pruned 1 runs' input and output, 1 steps" in out
    shown = cli("runs", "show", old).stdout
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"input     (pruned on {day}" in shown and f"steps     (pruned on {day}" in shown
    assert "null" not in shown
    assert json.loads(cli("runs", "show", old, "--json").stdout)["pruned_at"] > three_days_ago
    assert json.loads(cli("runs", "show", recent, "--json").stdout)["pruned_at"] is None
    assert cli("prune", "--older-than", "1d").stdout.startswith("nothing to prune: no finished run ended")
    assert cli("prune", "--older-than", "1s", "--yes").stdout.startswith("pruned 1 runs'")
