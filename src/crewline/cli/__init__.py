"""The ``crewline`` command. Each area adds its commands from its own module in this package, listed in
``_COMMANDS`` and imported only when its command runs."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ["main"]


@dataclass(frozen=True)
class _Lazy:
    """A command defined in this package's module ``module`` under its own name, imported when invoked."""

    module: str
    # Its short help, shown by `crewline --help` without importing the module; tests/test_cli_startup.py
    # checks it against the command's docstring.
    help: str
    # Modules that add subcommands to it (steer adds `runs pause` and `runs resume`).
    extended_by: tuple[str, ...] = ()
    # The Python name of the command in its module, when not the command's own (`eval` shadows a builtin).
    attribute: str | None = None


_COMMANDS: dict[str, _Lazy] = {
    "db": _Lazy("db", "The database: schema, backups, restores."),
    "run": _Lazy("runs", "Start WORKFLOW (workers execute it; see `crewline worker`)."),
    "runs": _Lazy("runs", "List, inspect and steer runs.", extended_by=("steer",)),
    "prune": _Lazy(
        "runs", "Remove finished runs' payloads (and unreferenced blobs) to keep the database bounded."
    ),
    "worker": _Lazy(
        "worker",
        "Claim and execute runs; SIGTERM or Ctrl-C finish the current steps, release the runs and exit.",
    ),
    "review": _Lazy("review", "Approve, reject, resolve or settle what runs are waiting on."),
    "serve": _Lazy("serve", "Serve the REST API and webhooks, and execute runs unless --no-workers."),
    "mcp": _Lazy(
        "mcp",
        "Serve crewline's MCP tools on stdin/stdout: start workflows, read runs, decide reviews, search memory.",
    ),
    "keys": _Lazy("keys", "API keys for `crewline serve` (stored hashed; a key is shown only when created)."),
    "secrets": _Lazy(
        "secrets", "Secrets for credential references (secret:NAME in crewline.toml), encrypted at rest."
    ),
    "memory": _Lazy("memory", "The context store: scoped memory with hybrid search, versions and rollback."),
    "costs": _Lazy(
        "costs",
        "Model spend by day, model, workflow or API key (calls with an unknown price are counted apart, never as $0).",
    ),
    "stats": _Lazy(
        "stats",
        "Model calls (cost, latency percentiles, errors by class, retries, cache hits), runs by state and throughput, queue depth, review waiting times and memory retrieval hit rate, from the database.",
    ),
    "prompts": _Lazy(
        "prompts", "Prompt templates: files in prompts/, versioned by content hash, with labels."
    ),
    "eval": _Lazy(
        "evals",
        "Evaluations: datasets in evals/, scored runs of a prompt version, verdicts against a baseline.",
        attribute="eval_group",
    ),
    "shadow": _Lazy(
        "shadow", "Shadow runs: a candidate workflow beside a live one ([shadow.WORKFLOW] in crewline.toml)."
    ),
    "config": _Lazy("config", "The project's configuration (crewline.toml)."),
    "alerts": _Lazy(
        "alerts", "Alert rules ([alerts.NAME] in crewline.toml), their history, and channel tests."
    ),
    "triggers": _Lazy(
        "triggers", "Inbox triggers ([triggers.NAME] in crewline.toml): health and skipped emails."
    ),
    "workflows": _Lazy("steer", "Pause, resume, disable and enable workflows."),
    "queues": _Lazy("steer", "Pause and resume every run of a queue."),
    "flags": _Lazy("steer", "Flags workflows read with ctx.flag(name, default=...)."),
}


class _LazyGroup(click.Group):
    """click's lazy group: a command's module is imported when the command runs (or its help is asked
    for), so `crewline --help` and every other command skip what they do not use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = _COMMANDS.get(cmd_name)
        if cmd_name not in self.commands and lazy is not None:
            self.add_command(_load(cmd_name, lazy), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own layout, with each short help taken from the table for commands not yet imported.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self._summary(name).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _summary(self, name: str) -> click.Command:
        return self.commands.get(name) or click.Command(name, help=_COMMANDS[name].help)


def _load(name: str, lazy: _Lazy) -> click.Command:
    command = getattr(importlib.import_module(f"{__name__}.{lazy.module}"), lazy.attribute or name)
    for module in lazy.extended_by:
        importlib.import_module(f"{__name__}.{module}")
    assert isinstance(command, click.Command)
    return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crewline")
@click.option(
    "--project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="CREWLINE_PROJECT",
    help="The project directory (its crewline.toml, prompts/, .crewline/ database). "
    "Default: the nearest directory from here upward holding a crewline.toml.",
)
def main(project: Path | None) -> None:
    """crewline: durable, budgeted, observable AI work for small teams."""
    if project is not None:
        # The environment, not an argument: the operator's module builds its App() at import time and
        # must find the same project, as must any process started from here.
        os.environ["CREWLINE_PROJECT"] = str(project.resolve())
