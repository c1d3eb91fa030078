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

    [webhooks.signup]
    workflow = "onboard"
    secret_env = "SIGNUP_WEBHOOK_SECRET"
    tolerance = "5m"           # accepted clock skew of X-Crewline-Timestamp
    max_body = "256KB"
    callback_url = "https://example.com/crewline-done"   # optional, signed like the webhook
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, parse_duration, parse_size
from ..errors import ConfigError

__all__ = [
    "HookConfig",
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
        if callback is not None and (
            not isinstance(callback, str) or not callback.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{where}: callback_url must be an http:// or https:// URL")
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
class ServerConfig:
    max_body: int = 1024 * 1024
    public_url: str | None = None
    key_cache: float = 5.0
    max_header_size: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections_per_client: int = 256
    hooks: Mapping[str, HookConfig] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if environ is None else environ
        server = settings.sections.get("server", {})
        if not isinstance(server, dict):
            raise ConfigError("[server] in crewline.toml must be a table")
        unknown = set(server) - {"max_body", "public_url", "key_cache", *_CONNECTION_SETTINGS}
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
            hooks={name: HookConfig.parse(name, t, env) for name, t in hooks_table.items()},
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
