"""The tracing part of ``[observe]`` in crewline.toml: where spans go and whether they carry content.

Read without importing OpenTelemetry, so ``crewline config check`` can say that the extra is missing
instead of failing on the import. Headers for the collector (usually an API key) come from the
environment variable the file names, never from the file, and their values appear in no message.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..config import did_you_mean
from ..errors import ConfigError

__all__ = ["TRACE_KEYS", "TraceSettings", "trace_problems"]

TRACE_KEYS = frozenset({"otlp_endpoint", "otlp_headers_env", "capture_content", "service_name"})
_TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class TraceSettings:
    """Tracing is on when ``endpoint`` is set: spans go there over OTLP/HTTP (protobuf)."""

    endpoint: str | None = None  # the full URL spans are POSTed to, ending in /v1/traces
    headers: Mapping[str, str] = field(default_factory=dict)
    capture_content: bool = False
    service_name: str = "crewline"

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @classmethod
    def from_section(cls, table: Any, environ: Mapping[str, str]) -> TraceSettings:
        """Read ``[observe]``; a :class:`ConfigError` names the key that is wrong and what it accepts."""
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ConfigError(
                '[observe] must be a table, e.g. [observe] otlp_endpoint = "http://localhost:4318"'
            )
        capture = table.get("capture_content", False)
        if not isinstance(capture, bool):
            raise ConfigError(f"[observe] capture_content must be true or false, got {capture!r}")
        service = table.get("service_name", "crewline")
        if not isinstance(service, str) or not service.strip():
            raise ConfigError(f"[observe] service_name must be a non-empty string, got {service!r}")
        endpoint = _endpoint(table.get("otlp_endpoint"))
        headers = _headers(table.get("otlp_headers_env"), environ)
        if endpoint is not None:
            _require_extra()
        return cls(endpoint, headers, capture, service.strip())


def trace_problems(table: Any, environ: Mapping[str, str]) -> list[str]:
    """Every problem with the tracing keys of ``[observe]``, for ``crewline config check``."""
    if not isinstance(table, Mapping):
        return ['[observe] must be a table, e.g. [observe] otlp_endpoint = "http://localhost:4318"']
    known = ", ".join(sorted(TRACE_KEYS))
    problems = [
        f"[observe] has unknown key {k!r}{did_you_mean(k, TRACE_KEYS)}; known: {known}"
        for k in table
        if k not in TRACE_KEYS
    ]
    try:
        TraceSettings.from_section(table, environ)
    except ConfigError as e:
        problems.append(str(e))
    return problems


def _endpoint(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"[observe] otlp_endpoint must be a URL string, got {_shown(value)}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"[observe] otlp_endpoint must be an http(s) URL such as 'http://localhost:4318' "
            f"(the collector's OTLP/HTTP port), got {_shown(value)}"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "[observe] otlp_endpoint must not hold credentials: put them in headers through otlp_headers_env"
        )
    base = value.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH


def _headers(variable: Any, environ: Mapping[str, str]) -> dict[str, str]:
    """``k1=v1,k2=v2`` from the named variable, as OTEL_EXPORTER_OTLP_HEADERS is written."""
    if variable is None:
        return {}
    if not isinstance(variable, str) or not variable:
        raise ConfigError(
            f"[observe] otlp_headers_env must name an environment variable, got {_shown(variable)}"
        )
    raw = environ.get(variable)
    if raw is None:
        raise ConfigError(
            f"[observe] otlp_headers_env names {variable}, which is not set: set it to "
            "'name=value[,name=value...]' (e.g. 'x-api-key=...') or remove otlp_headers_env"
        )
    headers: dict[str, str] = {}
    for item in raw.split(","):
        name, eq, val = item.partition("=")
        if not item.strip():
            continue
        if not eq or not name.strip():
            # The value is a secret: say where it is malformed, never what it holds.
            raise ConfigError(
                f"[observe] otlp_headers_env: {variable} must be 'name=value[,name=value...]'; "
                f"item {len(headers) + 1} has no 'name='"
            )
        headers[name.strip().lower()] = val.strip()
    return headers


def _require_extra() -> None:
    for module in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(
                "[observe] otlp_endpoint is set but OpenTelemetry is not installed: "
                "pip install 'crewline[observe]', or remove otlp_endpoint"
            )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
