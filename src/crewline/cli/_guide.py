"""What to do next, printed by ``crewline serve --guide`` (``scripts/run`` asks for it) once listening.

Each command is written as it would run from the directory the server was started in: with the
``crewline`` the server was started with, and ``--project`` only when the project would not be found
from there by itself (the example project in ``examples/`` seen from the repository root, say).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from ..app import App
from ..config import find_project, shown_path

__all__ = ["guide"]


def guide(app: App, url: str) -> str:
    cli = _command(app)
    no_input = sorted(name for name, wf in app.workflows.items() if not wf.takes_input)
    first = min(app.workflows, default="WORKFLOW")
    start = f"run {no_input[0]} --wait" if no_input else f"run {first} --input '{{...}}'"
    steps = [
        (f"{cli} keys create --scope operator --name me", "prints a key, once: export KEY=..."),
        (f"{url}/", "the console, in a browser: sign in with that key"),
        (f'curl -H "Authorization: Bearer $KEY" {url}/api/v1/runs', "the API, with that key"),
        (f"{cli} {start}", f"start a run (inputs: {url}/docs)"),
        (f"{cli} runs list", "runs, newest first"),
        (f"{cli} review list", "what waits for a decision"),
        (f"{cli} review approve ID", "or: review reject ID"),
    ]
    width = max(len(command) for command, _ in steps)
    return "\n".join(
        [
            f"crewline is ready: console {url}/, API {url}/api/v1, interactive docs {url}/docs",
            f"workflows: {', '.join(sorted(app.workflows)) or '(none)'}",
            "next, from this directory:",
            *(f"  {command.ljust(width)}  # {why}" for command, why in steps),
        ]
    )


def _command(app: App) -> str:
    argv0 = Path(sys.argv[0])
    on_path = shutil.which("crewline")
    if argv0.name != "crewline" or (on_path and Path(on_path).resolve() == argv0.resolve()):
        exe = "crewline"
    else:
        exe = shown_path(argv0)
    project = app.settings.project_dir.resolve()
    if find_project(Path.cwd()) == project:
        return exe
    return f"{exe} --project {shlex.quote(shown_path(project))}"
