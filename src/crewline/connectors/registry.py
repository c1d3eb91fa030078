"""The connector registry: ``[connectors.NAME]`` sections parsed into typed settings, connectors built
lazily on first use and closed with the app.

Each ``[connectors.NAME]`` table names its ``type``; :data:`TYPES` maps each type to the module attribute
holding its :class:`~crewline.connectors.base.ConnectorType` (``"module:attribute"``, imported only when
a section of that type is read, so a project without Slack never imports the Slack client). Adding a type
is one line here (see :mod:`crewline.connectors.base` for the rest). There is no ``if type == ...``
chain anywhere: the table is the registry.

A bad section is a :class:`~crewline.errors.ConfigError` naming ``[connectors.NAME]`` and the key;
``crewline config check`` lists every problem of every section (:func:`connectors_problems`).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import Any

import pydantic

from ..config import did_you_mean
from ..errors import ConfigError
from ..observe.events import Observers
from ..secret_store import Credentials
from .base import Connector, ConnectorSettings, ConnectorSetup, ConnectorType

__all__ = ["TYPES", "Connectors", "connector_type", "connectors_problems", "parse_connector"]

# type name -> "module:attribute" of its ConnectorType.
TYPES: dict[str, str] = {
    "http": "crewline.connectors.http:CONNECTOR",
    "slack": "crewline.connectors.slack:CONNECTOR",
    "mcp": "crewline.connectors.mcp_client:CONNECTOR",
    "imap": "crewline.connectors.imap:CONNECTOR",
    "smtp": "crewline.connectors.smtp:CONNECTOR",
}


def connector_type(name: str, type_name: object) -> ConnectorType:
    """The registered type ``type_name`` of connector ``name``, or a ConfigError listing the known ones."""
    if not isinstance(type_name, str) or type_name not in TYPES:
        hint = did_you_mean(type_name, TYPES) if isinstance(type_name, str) else ""
        raise ConfigError(
            f"[connectors.{name}] type = {type_name!r} is not a connector type{hint}; "
            f"known: {', '.join(sorted(TYPES))}"
        )
    module, _, attribute = TYPES[type_name].partition(":")
    found: ConnectorType = getattr(importlib.import_module(module), attribute)
    return found


def parse_connector(name: str, table: object) -> tuple[ConnectorType, ConnectorSettings]:
    """The type and validated settings of ``[connectors.NAME]``; a ConfigError names the section and key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f'[connectors.{name}] must be a table, e.g. [connectors.{name}] type = "http"')
    if "type" not in table:
        raise ConfigError(f"[connectors.{name}] needs type = one of {', '.join(sorted(TYPES))}")
    kind = connector_type(name, table["type"])
    try:
        settings = kind.settings.model_validate(dict(table))
    except pydantic.ValidationError as e:
        raise ConfigError(f"[connectors.{name}] {_first_problem(e)}") from None
    return kind, settings


def _first_problem(error: pydantic.ValidationError) -> str:
    """The problems as ``key: what is wrong``; never echoes an input value (it may be a pasted token)."""
    parts = []
    for err in error.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "section"
        message = "is not a known key" if err["type"] == "extra_forbidden" else err["msg"]
        message = message.removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def connectors_problems(section: object, credentials: Credentials) -> list[str]:
    """Every problem of ``[connectors]`` (for ``crewline config check``), each naming its section."""
    if not isinstance(section, Mapping):
        return ['[connectors] must hold one table per connector: [connectors.NAME] type = "http"']
    problems: list[str] = []
    for name, table in section.items():
        try:
            kind, settings = parse_connector(name, table)
        except ConfigError as e:
            problems.append(str(e))
            continue
        if kind.problems is not None:
            problems.extend(kind.problems(name, settings, credentials))
    return problems


class Connectors:
    """The configured connectors of one process, built on first use and closed by :meth:`aclose`."""

    def __init__(
        self,
        section: Mapping[str, Any] | None,
        credentials: Credentials,
        observers: Observers | None = None,
    ) -> None:
        self._section = dict(section or {})
        self._credentials = credentials
        self._observers = observers
        self._built: dict[str, Connector] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._section)

    @property
    def credentials(self) -> Credentials:
        return self._credentials

    def add(self, connector: Connector) -> None:
        """Use an already built connector under its name (an app that builds one in code)."""
        self._built[connector.name] = connector

    def get(self, name: str) -> Connector:
        """The connector ``name``, built now if this is its first use."""
        found = self._built.get(name)
        if found is not None:
            return found
        if name not in self._section:
            known = ", ".join(sorted({*self._section, *self._built})) or "none configured"
            raise ConfigError(
                f"no connector named {name!r}{did_you_mean(name, self._section)} (known: {known}); "
                f"add [connectors.{name}] to crewline.toml"
            )
        kind, settings = parse_connector(name, self._section[name])
        built = kind.build(ConnectorSetup(name, settings, self._credentials, self._observers, self.get))
        self._built[name] = built
        return built

    async def aclose(self) -> None:
        async with self._lock:
            built, self._built = list(self._built.values()), {}
        for connector in built:
            await connector.aclose()
