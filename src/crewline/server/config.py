"""The server's configuration: the ``[server]`` and ``[webhooks.NAME]`` tables of ``crewline.toml``.

Webhook secrets are never written in the file: each hook names the environment variable that holds its
secret (``secret_env``), read once when the server starts.

.. code-block:: toml

    [server]
    max_body = "1MB"           # any request body larger than this gets 413
    public_url = "https://ops.example.com"   # base of status URLs (default: the request's own)
    key_cache = "5s"           # how long a verified API key is trusted before it is looked up again
    max_header_size = "64KB"   # a request's header block larger than this gets 431
    max_headers = 100          # and so does one with more header fields than this
    header_timeout = "10s"     # a connection that has not sent a whole header block by then is closed
    max_connections_per_client = 256   # further connections from one address get 429
    database_wait = "3s"       # a request waits this long for an unreachable database, then gets 503

    [webhooks.signup]
    workflow = "onboard"
    secret_env = "SIGNUP_WEBHOOK_SECRET"
    tolerance = "5m"           # accepted clock skew of X-Crewline-Timestamp
    max_body = "256KB"
    callback_url = "https://example.com/crewline-done"   # optional, signed like the webhook

    [mcp]                      # the MCP endpoint at /mcp (see server/mcp.py)
    allowed_hosts = ["ops.example.com"]          # Host names clients use, beyond loopback and public_url
    allowed_origins = ["https://ops.example.com"]   # browser Origins allowed, beyond loopback and public_url
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, check_http_url, parse_duration, parse_size
from ..errors import ConfigError

__all__ = [
    "HookConfig",
    "McpConfig",
    "ServerConfig",
]

_HOOK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class HookConfig:
    """One webhook: ``POST /hooks/{name}`` starts ``workflow`` with the JSON body as its input."""

    name: str
    workflow: str
    secret: bytes = field(repr=False)
    secret_env: str
    tolerance: float = 300.0
    max_body: int = 256 * 1024
    callback_url: str | None = None

    @classmethod
    def parse(cls, name: str, table: Any, environ: Mapping[str, str]) -> HookConfig:
        where = f"[webhooks.{name}]"
        if not _HOOK_NAME.match(name):
            raise ConfigError(f"{where}: a hook name may use letters, digits, '_', '.', '-' only")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with workflow = ... and secret_env = ...")
        unknown = set(table) - {"workflow", "secret_env", "tolerance", "max_body", "callback_url"}
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        workflow = _required_str(table, "workflow", where)
        secret_env = _required_str(table, "secret_env", where)
        secret = environ.get(secret_env, "")
        if not secret:
            raise ConfigError(
                f"{where}: environment variable {secret_env} is not set; it must hold the hook's secret"
            )
        callback = table.get("callback_url")
        if callback is not None:
            callback = check_http_url(callback, f"{where} callback_url")
        return cls(
            name=name,
            workflow=workflow,
            secret=secret.encode(),
            secret_env=secret_env,
            tolerance=_duration(table.get("tolerance", 300.0), f"{where} tolerance"),
            max_body=parse_size(table.get("max_body", 256 * 1024), f"{where} max_body"),
            callback_url=callback,
        )


@dataclass(frozen=True)
class McpConfig:
    """Which ``Host`` and ``Origin`` headers the MCP endpoint answers, against DNS rebinding.

    Loopback names (any port) and the host of ``[server] public_url`` are always allowed; an entry
    ``name`` allows any port, ``name:port`` that port only. A request without ``Origin`` (not from a
    browser) passes the origin check.
    """

    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def parse(cls, table: Any) -> McpConfig:
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise ConfigError('[mcp] must be a table, e.g. [mcp] allowed_hosts = ["ops.example.com"]')
        unknown = set(table) - {"allowed_hosts", "allowed_origins"}
        if unknown:
            raise ConfigError(
                f"[mcp]: unknown setting(s) {', '.join(sorted(unknown))}; known: allowed_hosts, allowed_origins"
            )
        hosts = _names(table.get("allowed_hosts", []), "allowed_hosts", "ops.example.com")
        origins = _names(table.get("allowed_origins", []), "allowed_origins", "https://ops.example.com")
        for origin in origins:
            if not _ORIGIN.match(origin):
                raise ConfigError(
                    f"[mcp] allowed_origins: {origin!r} is not an origin; write scheme://host[:port], "
                    "e.g. 'https://ops.example.com'"
                )
        for host in hosts:
            if not _HOST.match(host):
                raise ConfigError(
                    f"[mcp] allowed_hosts: {host!r} is not a host name; write name or name:port, "
                    "e.g. 'ops.example.com' or 'ops.example.com:8443'"
                )
        return cls(tuple(h.lower() for h in hosts), tuple(o.lower().rstrip("/") for o in origins))


_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_ORIGIN = re.compile(r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?/?$")


def _names(value: Any, key: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"[mcp] {key} must be a list of strings, e.g. [{example!r}]")
    return list(value)


@dataclass(frozen=True)
class ServerConfig:
    max_body: int = 1024 * 1024
    public_url: str | None = None
    key_cache: float = 5.0
    max_header_size: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections_per_client: int = 256
    database_wait: float = 3.0
    hooks: Mapping[str, HookConfig] = field(default_factory=dict)
    mcp: McpConfig = field(default_factory=McpConfig)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if environ is None else environ
        server = settings.sections.get("server", {})
        if not isinstance(server, dict):
            raise ConfigError("[server] in crewline.toml must be a table")
        unknown = set(server) - {
            "max_body",
            "public_url",
            "key_cache",
            "database_wait",
            *_CONNECTION_SETTINGS,
        }
        if unknown:
            raise ConfigError(f"[server]: unknown setting(s) {', '.join(sorted(unknown))}")
        hooks_table = settings.sections.get("webhooks", {})
        if not isinstance(hooks_table, dict):
            raise ConfigError("[webhooks] in crewline.toml must hold one table per hook: [webhooks.NAME]")
        public_url = server.get("public_url")
        if public_url is not None and not isinstance(public_url, str):
            raise ConfigError("[server] public_url must be a string like 'https://ops.example.com'")
        return cls(
            max_body=parse_size(server.get("max_body", 1024 * 1024), "[server] max_body"),
            public_url=public_url.rstrip("/") if public_url else None,
            key_cache=_duration(server.get("key_cache", 5.0), "[server] key_cache"),
            database_wait=_duration(server.get("database_wait", 3.0), "[server] database_wait"),
            hooks={name: HookConfig.parse(name, t, env) for name, t in hooks_table.items()},
            mcp=McpConfig.parse(settings.sections.get("mcp")),
            **_connection_limits(server),
        )


_CONNECTION_SETTINGS = ("max_header_size", "max_headers", "header_timeout", "max_connections_per_client")


def _connection_limits(server: dict[str, Any]) -> dict[str, Any]:
    """The limits enforced on connections before a request reaches the application (see connections.py)."""
    given = {name: server.get(name, getattr(ServerConfig, name)) for name in _CONNECTION_SETTINGS}
    timeout = _duration(given["header_timeout"], "[server] header_timeout")
    if timeout <= 0:
        raise ConfigError("[server] header_timeout must be more than 0 seconds, e.g. '10s'")
    return {
        "max_header_size": parse_size(given["max_header_size"], "[server] max_header_size"),
        "max_headers": _count(given["max_headers"], "[server] max_headers"),
        "header_timeout": timeout,
        "max_connections_per_client": _count(
            given["max_connections_per_client"], "[server] max_connections_per_client"
        ),
    }


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number from 1 up, got {value!r}")
    return value


def _required_str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} is required and must be a string")
    return value


def _duration(value: Any, what: str) -> float:
    try:
        return parse_duration(value)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from e
