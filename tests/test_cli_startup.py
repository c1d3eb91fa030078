"""Start-up stays light: ``import crewline`` and ``crewline --help`` import none of the heavy dependencies.

Asserted on the list of modules ``python -X importtime`` reports, never on time (bench/startup.py measures
that). A new package or command stays lazy because these lists are checked, not because anyone remembers.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
from click.testing import CliRunner

import crewline.cli
from crewline.cli import _COMMANDS, main

# What a command that does not use them must not pay for: the vectors and the embedder, the server, the
# HTTP client, MCP, encryption, templates, metrics and traces, the event loop, validation.
HEAVY = {
    "asyncio",
    "cryptography",
    "fastapi",
    "httpx",
    "jinja2",
    "mcp",
    "model2vec",
    "numpy",
    "opentelemetry",
    "prometheus_client",
    "pydantic",
    "starlette",
    "uvicorn",
}


def _imported(*args: str) -> tuple[set[str], str]:
    """The top-level packages a fresh interpreter imports running ``python -X importtime ARGS``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120, check=True
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("package")
    }
    assert "crewline" in names  # the report was read: the package itself is on it
    return names, done.stdout


def test_import_crewline_imports_nothing_heavy() -> None:
    names, _ = _imported("-c", "import crewline")
    assert names & HEAVY == set()


def test_help_imports_nothing_heavy_and_lists_every_command() -> None:
    names, out = _imported("-m", "crewline", "--help")
    assert names & HEAVY == set()
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(_COMMANDS) == _root_commands()


def test_lazy_names_are_the_public_names() -> None:
    import crewline

    assert set(crewline._HOMES) == set(crewline.__all__)
    for name in crewline.__all__:
        assert getattr(crewline, name).__name__ == name
    assert crewline.store.__name__ == "crewline.store"  # subpackages still reachable after `import crewline`


def test_each_short_help_in_the_table_is_the_commands_own() -> None:
    ctx = click.Context(main)
    for name, lazy in _COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=10_000) == lazy.help, name


def test_a_lazily_loaded_group_keeps_the_subcommands_other_modules_add() -> None:
    out = CliRunner().invoke(main, ["runs", "--help"]).output
    assert "pause" in out and "resume" in out


def _root_commands() -> set[str]:
    """Every click command defined in the cli package that is not a subcommand of another: the commands
    `crewline` must offer."""
    found: dict[int, click.Command] = {}
    for info in pkgutil.iter_modules(crewline.cli.__path__, "crewline.cli."):
        module = importlib.import_module(info.name)
        found.update({id(v): v for v in vars(module).values() if isinstance(v, click.Command)})
    children = {
        id(sub) for cmd in found.values() if isinstance(cmd, click.Group) for sub in cmd.commands.values()
    }
    return {cmd.name or "" for key, cmd in found.items() if key not in children and cmd is not main}


def test_an_app_loads_no_server_client_or_template_engine_until_used() -> None:
    # asyncio, pydantic and numpy (memory's vectors, the call figures) are what an App is made of.
    names, _ = _imported("-c", "from crewline import App")
    assert names & (HEAVY - {"asyncio", "numpy", "pydantic"}) == set()
