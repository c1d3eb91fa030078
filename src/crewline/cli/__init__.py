"""The ``crewline`` command. Each area adds its commands from its own module in this package."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click

__all__ = ["main"]

# Modules of this package that each define a click command or group named by the second item (steer also
# adds `runs pause` and `runs resume` to the runs group).
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("db", "db"),
    ("runs", "run"),
    ("runs", "runs"),
    ("runs", "prune"),
    ("worker", "worker"),
    ("review", "review"),
    ("serve", "serve"),
    ("keys", "keys"),
    ("memory", "memory"),
    ("costs", "costs"),
    ("stats", "stats"),
    ("prompts", "prompts"),
    ("evals", "eval_group"),
    ("shadow", "shadow"),
    ("config", "config"),
    ("alerts", "alerts"),
    ("steer", "workflows"),
    ("steer", "queues"),
    ("steer", "flags"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _module, _name in _COMMANDS:
    main.add_command(getattr(importlib.import_module(f"{__name__}.{_module}"), _name))
