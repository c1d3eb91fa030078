"""``crewline config check``, and the same check when ``serve`` and ``worker`` start.

Each section of ``crewline.toml`` is read by the room that owns it, often only when first used (the
model gateway at a run's first model call): a mistake there would let a server report ready and then
fail every run. So every section is read here up front, each on its own so that one report lists every
problem; unknown sections and keys, which nothing would ever read, are warnings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import click

from ..config import CONFIG_FILE, CORE_KEYS, Settings, did_you_mean, read_toml, shown_path
from ..connectors.registry import connectors_problems
from ..console.config import console_problems
from ..errors import ConfigError
from ..evals.config import evals_problems
from ..flows.prompts import prompts_dir
from ..flows.review_requests import RiskPolicy
from ..flows.shadow import shadow_problems
from ..memory.ann import vector_settings
from ..memory.upkeep import purge_every
from ..models.config import models_problems
from ..observe.alert_config import AlertsConfig
from ..observe.metrics import METRICS_KEYS, metrics_token
from ..observe.trace_config import trace_problems
from ..secret_store import Credentials, secrets_key
from ..server.config import HookConfig, McpConfig, ServerConfig
from ..workers.inbox import triggers_problems
from ..workers.slack_reviews import slack_problems
from ._common import fail

__all__ = ["ProjectReport", "check_project", "config", "require_valid_project"]

_MEMORY_KEYS = frozenset(
    {
        "embedder",
        "model_dir",
        "dim",
        "near_duplicate",
        "chunk_size",
        "chunk_overlap",
        "text_budget",
        "purge_every",
        "vector_index",
        "hnsw_ef_search",
    }
)


@dataclass
class ProjectReport:
    """What is wrong with a project's configuration (``errors``) and what looks unintended (``warnings``)."""

    source: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.source}: error: {e}" for e in self.errors] + [
            f"{self.source}: warning: {w}" for w in self.warnings
        ]


def check_project(environ: Mapping[str, str] | None = None) -> ProjectReport:
    env = os.environ if environ is None else environ
    try:
        settings = Settings.load(environ=env)
    except ConfigError as e:
        return ProjectReport(CONFIG_FILE, errors=[str(e)])
    report = ProjectReport(shown_path(settings.config_file) if settings.config_file else "(no crewline.toml)")
    checks: dict[str, Callable[[Any], list[str]]] = {
        "models": models_problems,
        "review": lambda table: _review(table, settings.sections.get("connectors")),
        "server": lambda _: _server(settings, env),
        "webhooks": lambda table: _webhooks(table, env),
        "mcp": lambda table: _one(partial(McpConfig.parse, table)),
        "prompts": lambda _: _prompts(settings),
        "memory": _memory,
        "alerts": lambda table: _one(partial(AlertsConfig.parse, table, env)),
        "observe": lambda table: _observe(table, env),
        "secrets": lambda _: _one(lambda: secrets_key(settings, env)),
        "connectors": lambda table: _connectors(table, settings, env),
        "console": console_problems,
        "triggers": lambda table: triggers_problems(table, settings.sections.get("connectors")),
        "evals": evals_problems,
        "shadow": shadow_problems,
    }
    for name, table in settings.sections.items():
        if name not in checks:
            report.warnings.append(
                f"unknown section [{name}]{did_you_mean(name, [*checks, 'crewline'])}; it is ignored "
                f"(sections: {', '.join(sorted([*checks, 'crewline']))})"
            )
            continue
        report.errors.extend(checks[name](table))
    if "secrets" not in settings.sections:  # the key may come from the environment alone
        report.errors.extend(checks["secrets"](None))
    report.warnings.extend(_core_warnings(settings))
    return report


def require_valid_project() -> None:
    """At the start of a long-running process: refuse a broken configuration, say what looks unintended."""
    report = check_project()
    for line in report.lines():
        click.echo(f"crewline: {line}", err=True)
    if report.errors:
        fail(
            f"{len(report.errors)} problem(s) in the configuration; fix them (`crewline config check` lists them)"
        )


def _core_warnings(settings: Settings) -> list[str]:
    if settings.config_file is None:
        return []
    core = read_toml(settings.config_file).get("crewline", {})
    if not isinstance(core, Mapping):
        return ["[crewline] must be a table"]
    return [
        f"unknown key [crewline] {key}{did_you_mean(key, CORE_KEYS)}; it is ignored "
        f"(keys: {', '.join(sorted(CORE_KEYS))})"
        for key in core
        if key not in CORE_KEYS
    ]


def _one(fn: Callable[[], object]) -> list[str]:
    try:
        fn()
    except ConfigError as e:
        return [str(e)]
    return []


def _review(table: Any, connectors: Any) -> list[str]:
    if not isinstance(table, Mapping):
        return ['[review] must be a table, e.g. [review] default = "medium"']
    keys = ["default", "risk", "slack"]
    extra = [
        f"[review] has unknown key {k!r}{did_you_mean(k, keys)}; known: {', '.join(keys)}"
        for k in table
        if k not in keys
    ]
    return extra + _one(lambda: RiskPolicy.from_section(table)) + slack_problems(table, connectors)


def _server(settings: Settings, env: Mapping[str, str]) -> list[str]:
    only_server = Settings(sections={"server": settings.sections.get("server")})
    return _one(lambda: ServerConfig.from_settings(only_server, env))


def _webhooks(table: Any, env: Mapping[str, str]) -> list[str]:
    if not isinstance(table, Mapping):
        return ["[webhooks] must hold one table per hook: [webhooks.NAME]"]
    return [p for name, hook in table.items() for p in _one(partial(HookConfig.parse, name, hook, env))]


def _prompts(settings: Settings) -> list[str]:
    return _one(lambda: prompts_dir(settings))


def _observe(table: Any, env: Mapping[str, str]) -> list[str]:
    """``[observe]`` holds the tracing keys and the metrics keys; each part checks its own."""
    if not isinstance(table, Mapping):
        return trace_problems(table, env)
    traced = {k: v for k, v in table.items() if k not in METRICS_KEYS}
    return trace_problems(traced, env) + _one(lambda: metrics_token(table, env))


def _connectors(table: Any, settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Each ``[connectors.NAME]`` by its type's model and checks; references are checked without the
    database (an unset variable, a ``secret:`` reference with no key to read it)."""
    try:
        credentials = Credentials.from_settings(None, settings, env)
    except ConfigError:
        credentials = Credentials(None, None, env)  # the bad key is [secrets]' own problem
    return connectors_problems(table, credentials)


def _memory(table: Any) -> list[str]:
    if not isinstance(table, Mapping):
        return ['[memory] must be a table, e.g. [memory] embedder = "local"']
    problems = [
        f"[memory] has unknown key {k!r}{did_you_mean(k, _MEMORY_KEYS)}; known: {', '.join(sorted(_MEMORY_KEYS))}"
        for k in table
        if k not in _MEMORY_KEYS
    ]
    for key in ("chunk_size", "chunk_overlap", "dim"):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"[memory] {key} must be a whole number >= 0, got {value!r}")
    near = table.get("near_duplicate")
    if near is not None and (
        isinstance(near, bool) or not isinstance(near, int | float) or not 0 < near <= 1
    ):
        problems.append(f"[memory] near_duplicate must be a number in (0, 1], got {near!r}")
    embedder = table.get("embedder", "local")
    if embedder != "local" and not isinstance(table.get("dim"), int):
        problems.append(f"[memory] embedder = {embedder!r} needs dim = <the model's vector size>")
    return problems + _one(lambda: purge_every(table)) + _one(lambda: vector_settings(table))


@click.group()
def config() -> None:
    """The project's configuration (crewline.toml)."""


@config.command("check")
def check_cmd() -> None:
    """Read every section of crewline.toml as serve and worker would; list every problem.

    Exit 0 when there are no errors (warnings are printed), 2 when there are."""
    report = check_project()
    for line in report.lines():
        click.echo(line)
    if report.errors:
        click.echo(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        raise SystemExit(2)
    click.echo(f"{report.source}: ok" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))
