"""Settings, in one place.

Read from the environment (``CREWLINE_*``) over an optional ``crewline.toml`` in the project directory
over defaults. Settings are an immutable object passed to what needs them; nothing reads the environment
behind its back. Sections of ``crewline.toml`` that belong to one room (``[models]``, ``[memory]``, ...)
are kept whole in ``Settings.sections`` for that room to parse.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["Settings", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"2d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"duration must be a number of seconds or a string like '30s', not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"duration must not be negative, got {value}")
        return float(value)
    text = value.strip().lower()
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                amount = float(number)
            except ValueError:
                break
            if amount < 0:
                break
            return amount * _UNITS[unit]
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"cannot read duration {value!r}: use a number of seconds or a number with ms, s, m, h, d or w"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Build with :meth:`load`; derive variants with :meth:`with_`."""

    database_url: str = "sqlite:///.crewline/crewline.db"
    project_dir: Path = field(default_factory=Path.cwd)
    # The application to load for the CLI and server, as "package.module:attribute".
    app: str | None = None
    lease_seconds: float = 15.0
    poll_interval: float = 0.2
    blob_threshold: int = 4096
    # Fault injection for durability tests and chaos drills: "<point>" or "<point>:<step>", where point is
    # after_intent | after_step_commit | before_run_completion. The process SIGKILLs itself there.
    crash_point: str | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, project_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        root = Path(project_dir or env.get("CREWLINE_PROJECT_DIR") or Path.cwd())
        data: dict[str, Any] = {}
        toml_path = root / "crewline.toml"
        if toml_path.exists():
            try:
                data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{toml_path.name} is not valid TOML: {e}") from e
        core = data.get("crewline", {}) if isinstance(data.get("crewline"), dict) else {}
        settings = cls(project_dir=root, sections={k: v for k, v in data.items() if k != "crewline"})
        values: dict[str, Any] = {}
        for name, conv in (
            ("database_url", str),
            ("app", str),
            ("lease_seconds", parse_duration),
            ("poll_interval", parse_duration),
            ("blob_threshold", int),
            ("crash_point", str),
        ):
            raw = env.get(f"CREWLINE_{name.upper()}", core.get(name))
            if raw is None:
                continue
            try:
                values[name] = conv(raw)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"setting {name} = {raw!r} is not valid: {e}") from e
        settings = replace(settings, **values)
        if (
            settings.database_url.startswith("sqlite:///")
            and not Path(settings.database_url[10:]).is_absolute()
        ):
            settings = replace(settings, database_url="sqlite:///" + str(root / settings.database_url[10:]))
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
