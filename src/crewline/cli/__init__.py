"""The ``crewline`` command. Each area adds its commands from its own module in this package."""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# Modules of this package that each define a click command or group named by the second item.
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
    ("prompts", "prompts"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crewline")
def main() -> None:
    """crewline: durable, budgeted, observable AI work for small teams."""


for _module, _name in _COMMANDS:
    main.add_command(getattr(importlib.import_module(f"{__name__}.{_module}"), _name))
