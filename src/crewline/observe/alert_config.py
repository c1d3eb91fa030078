"""The ``[alerts]`` section of ``crewline.toml``: alert rules and the channels that carry their notices.

.. code-block:: toml

    [alerts]
    interval = "30s"                 # how often the workers evaluate the rules
    retry_window = "24h"             # how long an undelivered notice is retried before it is given up

    [alerts.model_errors]
    what = "error_rate"              # see RULE_KINDS
    window = "15m"
    threshold = 0.2                  # a fraction for rates, a ratio for cost_spike, a count or a duration
    model = "strong"                 # filters: model, workflow, queue, scope
    min_calls = 20                   # also retrieval_drop: searches needed in each window (default 10)
    channels = ["ops", "mail"]
    cooldown = "1h"                  # no new episode is announced sooner than this after the last one

    [alerts.channels.ops]
    type = "slack"
    url_env = "SLACK_ALERTS_URL"     # secrets come from the environment, never the file

Every mistake is a :class:`~crewline.errors.ConfigError` naming the table and the field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, check_http_url, did_you_mean, parse_duration
from ..errors import ConfigError

__all__ = ["RETRIEVAL_MIN_SEARCHES", "RULE_KINDS", "WEEK", "AlertsConfig", "ChannelConfig", "Rule"]

# What a rule can watch, and what its threshold means.
RULE_KINDS: dict[str, str] = {
    "cost_spike": "ratio of the window's spend to the mean of the previous `baseline` windows",
    "budget": "a budget crossing 50/80/100% of its limit (threshold: the lowest level to announce)",
    "error_rate": "fraction of model calls in the window that failed",
    "retry_rate": "fraction of model calls in the window that needed more than one attempt",
    "review_wait": "how long the oldest pending review has waited (a duration)",
    "stuck_runs": "runs running past their lease, or pending/waiting past their due time by `window`",
    "queue_backlog": "pending runs due on a queue (a count); `max_age` also fires on the oldest's age",
    "retrieval_drop": (
        "drop of the memory search hit rate (share of searches with a hit) in the window below the same "
        "window a week earlier, as a fraction: 0.2 fires on 90% -> 69%"
    ),
    "trigger_silent": "time since the workflow last started a run (a duration)",
}
WEEK = 7 * 86400.0
RETRIEVAL_MIN_SEARCHES = 10  # retrieval_drop's default min_calls: searches needed in each window
_DURATION_THRESHOLD = frozenset({"review_wait", "trigger_silent"})
_RULE_KEYS = frozenset(
    {"what", "window", "threshold", "channels", "cooldown", "min_calls", "baseline", "max_age"}
    | {"model", "workflow", "queue", "scope"}
)
_CHANNEL_KEYS: dict[str, frozenset[str]] = {
    "slack": frozenset({"type", "url_env"}),
    "webhook": frozenset({"type", "url_env", "secret_env"}),
    "email": frozenset({"type", "host", "port", "starttls", "from", "to", "username", "password_env"}),
}
_SECTION_KEYS = frozenset({"interval", "retry_window", "channels"})


@dataclass(frozen=True)
class Rule:
    name: str
    what: str
    threshold: float
    window: float = 3600.0
    channels: tuple[str, ...] = ()
    cooldown: float = 3600.0
    min_calls: int = 1
    baseline: int = 24  # cost_spike: how many earlier windows make the baseline
    max_age: float | None = None
    model: str | None = None
    workflow: str | None = None
    queue: str | None = None
    # budget: only budget scopes starting with this ("day:", "workflow:triage");
    # retrieval_drop: only searches of a memory scope starting with this ("customer:")
    scope: str | None = None


@dataclass(frozen=True)
class ChannelConfig:
    """A resolved channel: its secrets already read from the environment (``repr`` hides them)."""

    name: str
    type: str
    url: str | None = field(default=None, repr=False)
    secret: bytes | None = field(default=None, repr=False)
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    sender: str = ""
    to: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AlertsConfig:
    rules: Mapping[str, Rule] = field(default_factory=dict)
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    interval: float = 30.0
    retry_window: float = 86400.0

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> AlertsConfig:
        table = settings.sections.get("alerts")
        return cls.parse({} if table is None else table, os.environ if environ is None else environ)

    @classmethod
    def parse(cls, table: Any, env: Mapping[str, str]) -> AlertsConfig:
        if not isinstance(table, Mapping):
            raise ConfigError("[alerts] must be a table: [alerts.NAME] per rule, [alerts.channels.NAME]")
        channels_table = table.get("channels", {})
        if not isinstance(channels_table, Mapping):
            raise ConfigError("[alerts] channels must hold one table per channel: [alerts.channels.NAME]")
        channels = {n: _channel(n, c, env) for n, c in channels_table.items()}
        rules = {}
        for name, value in table.items():
            if name in _SECTION_KEYS:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"[alerts] {name} = {value!r}: a rule is a table [alerts.{name}]; "
                    f"section keys are {', '.join(sorted(_SECTION_KEYS))}{did_you_mean(name, _SECTION_KEYS)}"
                )
            rules[name] = _rule(name, value, channels)
        return cls(
            rules=rules,
            channels=channels,
            interval=_get(table, "interval", "[alerts]", parse_duration, 30.0),
            retry_window=_get(table, "retry_window", "[alerts]", parse_duration, 86400.0),
        )


def _get(table: Mapping[str, Any], key: str, where: str, conv: Callable[[Any], Any], default: Any) -> Any:
    if key not in table:
        return default
    try:
        return conv(table[key])
    except (ConfigError, ValueError, TypeError) as e:
        raise ConfigError(f"{where} {key} = {table[key]!r} is not valid: {e}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError("use a number >= 0")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("use a whole number >= 1")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("use a non-empty string")
    return value


def _unknown(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{where} has unknown field {key!r}{did_you_mean(key, known)}; "
                f"known: {', '.join(sorted(known))}"
            )


def _rule(name: str, table: Mapping[str, Any], channels: Mapping[str, ChannelConfig]) -> Rule:
    where = f"[alerts.{name}]"
    _unknown(table, _RULE_KEYS, where)
    what = table.get("what")
    if what not in RULE_KINDS:
        raise ConfigError(
            f"{where} what = {what!r} is not a rule kind{did_you_mean(str(what), RULE_KINDS)}; "
            f"use one of {', '.join(sorted(RULE_KINDS))}"
        )
    default_threshold = 50.0 if what == "budget" else None
    if "threshold" not in table and default_threshold is None:
        raise ConfigError(f"{where} threshold is missing: {RULE_KINDS[what]}")
    threshold_conv = parse_duration if what in _DURATION_THRESHOLD else _number
    listed = table.get("channels", [])
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        raise ConfigError(f'{where} channels must be a list of channel names, e.g. ["ops"]')
    for channel in listed:
        if channel not in channels:
            raise ConfigError(
                f"{where} channels: no channel {channel!r}{did_you_mean(channel, channels)}; "
                f"declare it as [alerts.channels.{channel}]"
            )
    if what == "trigger_silent" and "workflow" not in table:
        raise ConfigError(f"{where} workflow is missing: trigger_silent watches one workflow's runs")
    threshold = _get(table, "threshold", where, threshold_conv, default_threshold)
    window = _get(table, "window", where, parse_duration, 3600.0)
    if what == "retrieval_drop":
        _check_retrieval_drop(where, threshold, window, table.get("window"))
    return Rule(
        name=name,
        what=what,
        threshold=threshold,
        window=window,
        channels=tuple(listed),
        cooldown=_get(table, "cooldown", where, parse_duration, 3600.0),
        min_calls=_get(
            table, "min_calls", where, _count, RETRIEVAL_MIN_SEARCHES if what == "retrieval_drop" else 1
        ),
        baseline=_get(table, "baseline", where, _count, 24),
        max_age=_get(table, "max_age", where, parse_duration, None),
        **{k: _get(table, k, where, _text, None) for k in ("model", "workflow", "queue", "scope")},
    )


def _check_retrieval_drop(where: str, threshold: float, window: float, given: Any) -> None:
    if not 0 < threshold < 1:
        raise ConfigError(
            f"{where} threshold = {threshold:g} is not valid: retrieval_drop's threshold is the drop in hit "
            "rate as a fraction between 0 and 1 (0.2 = 20 points below last week)"
        )
    if not 0 < window <= WEEK:
        raise ConfigError(
            f"{where} window = {given!r} is not valid: retrieval_drop compares the window with the same window a week "
            "earlier, so it must be longer than 0 and at most 7d"
        )


def _secret(table: Mapping[str, Any], key: str, where: str, env: Mapping[str, str]) -> str:
    var = _get(table, key, where, _text, None)
    if var is None:
        raise ConfigError(f"{where} {key} is missing: name the environment variable that holds it")
    value = env.get(var)
    if not value:
        raise ConfigError(f"{where} {key}: the environment variable {var} is not set")
    return value


def _channel(name: str, table: Any, env: Mapping[str, str]) -> ChannelConfig:
    where = f"[alerts.channels.{name}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table with type = slack | email | webhook")
    kind = table.get("type")
    if kind not in _CHANNEL_KEYS:
        raise ConfigError(
            f"{where} type = {kind!r} is not a channel type{did_you_mean(str(kind), _CHANNEL_KEYS)}; "
            f"use one of {', '.join(sorted(_CHANNEL_KEYS))}"
        )
    _unknown(table, _CHANNEL_KEYS[kind] | {"url", "password", "secret"}, where)
    for inline in ("url", "password", "secret"):
        if inline in table:
            raise ConfigError(
                f"{where} {inline}: secrets never go in the file; set {inline}_env to the name of an "
                "environment variable holding it"
            )
    if kind == "email":
        return _email(name, table, env, where)
    url = _secret(table, "url_env", where, env)
    check_http_url(url, f"{where} url_env: the variable {table['url_env']}")  # never echoes the URL
    secret = _secret(table, "secret_env", where, env).encode() if kind == "webhook" else None
    return ChannelConfig(name=name, type=kind, url=url, secret=secret)


def _email(name: str, table: Mapping[str, Any], env: Mapping[str, str], where: str) -> ChannelConfig:
    to = table.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise ConfigError(f'{where} to must be an address or a list of addresses, e.g. ["me@example.com"]')
    sender = _get(table, "from", where, _text, None)
    if sender is None or "@" not in sender:
        raise ConfigError(f'{where} from must be the sender address, e.g. "crewline@example.com"')
    port = _get(table, "port", where, _count, 25)
    if port > 65535:
        raise ConfigError(f"{where} port = {port} is not a port number (1-65535)")
    starttls = table.get("starttls", False)
    if not isinstance(starttls, bool):
        raise ConfigError(f"{where} starttls must be true or false")
    password = _secret(table, "password_env", where, env) if "password_env" in table else None
    return ChannelConfig(
        name=name,
        type="email",
        host=_get(table, "host", where, _text, "localhost"),
        port=port,
        starttls=starttls,
        sender=sender,
        to=tuple(to),
        username=_get(table, "username", where, _text, None),
        password=password,
    )
