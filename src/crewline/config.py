"""Settings, in one place.

Read from the environment (``CREWLINE_*``) over an optional ``crewline.toml`` in the project directory
over defaults. The project directory is the one named (``CREWLINE_PROJECT``), or the nearest directory
from the current one upward that holds a ``crewline.toml``, the way git finds ``.git``. Settings are an immutable object passed to what needs them; nothing reads the environment
behind its back. Sections of ``crewline.toml`` that belong to one room (``[models]``, ``[memory]``, ...)
are kept whole in ``Settings.sections`` for that room to parse.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "CORE_KEYS",
    "Settings",
    "check_header_value",
    "check_http_url",
    "did_you_mean",
    "find_project",
    "parse_duration",
    "parse_size",
    "read_toml",
    "shown_path",
]

CONFIG_FILE = "crewline.toml"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def check_http_url(value: object, where: str = "", example: str = "https://example.com/hook") -> str:
    """An http(s) URL from configuration, for crewline to send requests to; ``where`` names the setting.

    Whitespace and control characters are refused here, at config time: a CR or LF in a URL or a header
    value would otherwise let the configured text add headers to every request crewline sends.
    """
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where} must be an http:// or https:// URL, e.g. {example}".strip())
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(
            f"{where} must be one URL with no spaces, line breaks or control characters".strip()
        )
    return value


def check_header_value(name: str, value: object, where: str) -> str:
    """A header crewline sends from configuration: a token for a name and a value on one line."""
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ConfigError(f"{where}: a header name is one word of letters, digits and -, on one line")
    if not isinstance(value, str) or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise ConfigError(f"{where} {name}: a header value is one line of text, with no line breaks")
    return value


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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``name`` looks like a misspelling of one of ``known``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def shown_path(path: Path) -> str:
    """``path`` as a person at this prompt would type it: relative to the current directory when it is
    inside it or a few levels up (a project found upward), else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive, on Windows
        return str(path)
    ups = relative.split(os.sep).count(os.pardir)
    return (
        relative if ups <= 2 and not relative.startswith(os.pardir * ups + os.sep + os.pardir) else str(path)
    )


def find_project(start: Path) -> Path | None:
    """The nearest directory from ``start`` upward holding a ``crewline.toml``, or None."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    return None


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(value: str | int, what: str = "size") -> int:
    """Bytes from ``1048576``, ``"512KB"``, ``"1MB"`` (binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of bytes or a string like '1MB', not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{what} must be at least 1 byte, got {value}")
        return value
    match = _SIZE.match(str(value).lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ConfigError(f"cannot read {what} {value!r}: use a number of bytes or e.g. '512KB', '1MB'")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size < 1:
        raise ConfigError(f"{what} must be at least 1 byte, got {value!r}")
    return size


# The keys of [crewline] (each also CREWLINE_<KEY> in the environment) and how each is read.
_CORE: dict[str, Callable[[Any], Any]] = {
    "database_url": str,
    "app": str,
    "lease_seconds": parse_duration,
    "poll_interval": parse_duration,
    "blob_threshold": int,
    "crash_point": str,
}
CORE_KEYS = frozenset(_CORE)


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
    # after_intent | after_step_commit | before_run_completion | before_pause. The process SIGKILLs itself there.
    crash_point: str | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)
    # The crewline.toml read, or None when the project has none (every setting is then a default).
    config_file: Path | None = None

    @classmethod
    def load(cls, project_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        named = project_dir or env.get("CREWLINE_PROJECT") or env.get("CREWLINE_PROJECT_DIR")
        root = Path(named) if named else find_project(Path.cwd()) or Path.cwd()
        toml_path = root / CONFIG_FILE
        data = read_toml(toml_path) if toml_path.is_file() else {}
        core = data.get("crewline", {}) if isinstance(data.get("crewline"), dict) else {}
        settings = cls(
            project_dir=root,
            sections={k: v for k, v in data.items() if k != "crewline"},
            config_file=toml_path if toml_path.is_file() else None,
        )
        values: dict[str, Any] = {}
        for name, conv in _CORE.items():
            var = f"CREWLINE_{name.upper()}"
            raw = env.get(var, core.get(name))
            if raw is None:
                continue
            try:
                values[name] = conv(raw)
            except (ValueError, TypeError, ConfigError) as e:
                where = var if var in env else f"{shown_path(toml_path)}: [crewline] {name}"
                raise ConfigError(f"{where} = {raw!r} is not valid: {e}") from e
        settings = replace(settings, **values)
        if (
            settings.database_url.startswith("sqlite:///")
            and not Path(settings.database_url[10:]).is_absolute()
        ):
            settings = replace(settings, database_url="sqlite:///" + str(root / settings.database_url[10:]))
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{shown_path(path)} is not valid TOML: {e}; fix the file and try again") from e
    except OSError as e:
        raise ConfigError(f"cannot read {shown_path(path)}: {e.strerror or e}") from e
