"""The ``[console]`` table of ``crewline.toml``: how long a console sign-in lasts.

.. code-block:: toml

    [console]
    session_idle = "8h"   # a session unused this long ends; the next page asks to sign in again
    session_max = "7d"    # and every session ends this long after sign-in, used or not
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import Settings, parse_duration
from ..errors import ConfigError

__all__ = ["ConsoleConfig", "console_problems"]

_KEYS = ("session_idle", "session_max")


@dataclass(frozen=True)
class ConsoleConfig:
    session_idle: float = 8 * 3600.0
    session_max: float = 7 * 86400.0

    @classmethod
    def parse(cls, table: Any) -> ConsoleConfig:
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise ConfigError('[console] in crewline.toml must be a table, e.g. session_idle = "8h"')
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ConfigError(
                f"[console]: unknown setting(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})"
            )
        values = {key: _lifetime(table.get(key, getattr(cls, key)), key) for key in _KEYS}
        if values["session_idle"] > values["session_max"]:
            raise ConfigError("[console] session_idle must not be longer than session_max")
        return cls(**values)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleConfig:
        return cls.parse(settings.sections.get("console"))


def _lifetime(value: Any, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except ConfigError as e:
        raise ConfigError(f"[console] {key}: {e}") from e
    if not math.isfinite(seconds) or seconds < 60:
        raise ConfigError(f"[console] {key}: {value!r} is too short or endless; give e.g. '8h' or '7d'")
    return seconds


def console_problems(table: Any) -> list[str]:
    """What ``crewline config check`` reports about ``[console]``."""
    try:
        ConsoleConfig.parse(table)
    except ConfigError as e:
        return [str(e)]
    return []
