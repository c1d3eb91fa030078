"""An MCP server as a connector: its tools become crewline operations, for ``ctx.connector`` and agents.

.. code-block:: toml

    [connectors.files]
    type = "mcp"
    url = "https://mcp.example.com/mcp"          # streamable HTTP; or command = ["npx", "some-mcp-server"]
    headers = { Authorization = "secret:FILES_MCP_AUTH" }   # values are credential references
    tools = ["read_file", "write_file"]          # the allow-list (default: every tool the server lists)
    effects = { write_file = "idempotent" }      # default: from the tool's annotations, else irreversible
    connect_timeout = "10s"
    call_timeout = "30s"

The tool list is learnt from the server (:meth:`McpConnector.discover`), which the step layer records
as a durable read step, so a replay neither asks the server again nor sees a different list. Each call
opens its own connection (the 2026-07-28 protocol is stateless) and closes it, whatever happens: nothing
leaks between calls, and a stdio server is a child process that ends with the call. Connecting and
calling each have a hard timeout; a server that hangs is a :class:`~crewline.errors.ConnectorTimeout`,
which the step retries by its policy. A tool's own error is :class:`~crewline.errors.ConnectorRejected`
(asking again will not help). The idempotency key of each call travels in the request's ``_meta``
(``io.crewline/idempotency-key``) for servers that honour it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import pydantic

from ..config import parse_duration
from ..errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRejected,
    ConnectorTimeout,
    ConnectorUnavailable,
)
from ..secret_store import Credentials
from .base import (
    ConnectorSettings,
    ConnectorSetup,
    ConnectorType,
    CredentialRef,
    Effect,
    OperationSpec,
)

__all__ = ["CONNECTOR", "IDEMPOTENCY_META", "McpConnector", "McpSettings", "effect_of"]

log = logging.getLogger("crewline.connectors.mcp")

T = TypeVar("T")
IDEMPOTENCY_META = "io.crewline/idempotency-key"
_MAX_ERROR_TEXT = 500


def _seconds(value: object) -> float:
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ValueError(str(e)) from None
    if not 0 < seconds <= 3600:
        raise ValueError("must be more than 0 and at most an hour, e.g. '30s'")
    return seconds


class McpSettings(ConnectorSettings):
    type: Literal["mcp"]
    url: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    command: list[str] | None = pydantic.Field(default=None, min_length=1)
    env: dict[str, CredentialRef] = pydantic.Field(default_factory=dict)
    headers: dict[str, CredentialRef] = pydantic.Field(default_factory=dict)
    tools: list[str] | None = None
    effects: dict[str, Effect] = pydantic.Field(default_factory=dict)
    connect_timeout: float = 10.0
    call_timeout: float = 30.0

    @pydantic.field_validator("connect_timeout", "call_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return _seconds(value)

    @pydantic.model_validator(mode="after")
    def _one_transport(self) -> McpSettings:
        if (self.url is None) == (self.command is None):
            raise ValueError('give either url = "https://..." (streamable HTTP) or command = [...] (stdio)')
        if self.headers and self.url is None:
            raise ValueError("headers go with url; a stdio server takes env = { NAME = 'secret:...' }")
        if self.tools is not None:
            extra = sorted(set(self.effects) - set(self.tools))
            if extra:
                raise ValueError(f"effects names tools not in the tools allow-list: {', '.join(extra)}")
        return self


def effect_of(annotations: Mapping[str, Any] | None) -> Effect:
    """A tool's effect from its MCP annotations: read-only reads, idempotent repeats harmlessly, and
    anything else (destructive, or saying nothing) is irreversible."""
    hints = annotations or {}
    if hints.get("read_only_hint") is True:
        return "read"
    if hints.get("idempotent_hint") is True and hints.get("destructive_hint") is not True:
        return "idempotent"
    return "irreversible"


class McpArguments(pydantic.BaseModel):
    """A tool's arguments: any JSON object with the required keys; the server checks the rest. The
    JSON schema an agent is shown is the server's own."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)
    server_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(cls.server_schema)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError("a tool takes a JSON object of arguments")
        missing = [name for name in cls.server_schema.get("required", []) if name not in data]
        if missing:
            raise ValueError(f"missing required argument(s): {', '.join(missing)}")
        return data


def _arguments_model(tool: str, schema: Mapping[str, Any]) -> type[McpArguments]:
    namespace = {"__module__": __name__, "server_schema": dict(schema)}
    model: type[McpArguments] = type(f"{tool}_arguments", (McpArguments,), namespace)
    return model


class McpConnector:
    """One configured MCP server."""

    def __init__(self, setup: ConnectorSetup, server: Any = None) -> None:
        """``server``: an SDK ``MCPServer`` in this process to call instead of ``url``/``command`` (an app
        that embeds one; added with ``app.engine.connectors.add``)."""
        assert isinstance(setup.settings, McpSettings)
        self._server = server
        self._name = setup.name
        self._settings: McpSettings = setup.settings
        self._credentials: Credentials = setup.credentials

    @property
    def name(self) -> str:
        return self._name

    def operations(self) -> Mapping[str, OperationSpec]:
        """None built in: a run learns the server's tools through :meth:`discover` and :meth:`adopt`."""
        return {}

    async def discover(self) -> list[dict[str, Any]]:
        """The allowed tools the server lists, as JSON: name, description, input schema, annotations."""
        listed = await self._session("listing tools", lambda client: client.list_tools())
        allowed = self._settings.tools
        found = [
            {
                "name": tool.name,
                "description": tool.description or "",
                "input_schema": tool.input_schema,
                "annotations": None if tool.annotations is None else tool.annotations.model_dump(),
            }
            for tool in listed.tools
            if allowed is None or tool.name in allowed
        ]
        missing = sorted(set(allowed or ()) - {tool["name"] for tool in found})
        if missing:
            log.warning("connector %r: the server lists no tool %s", self._name, ", ".join(missing))
        return found

    def adopt(self, tools: Sequence[Mapping[str, Any]]) -> Mapping[str, OperationSpec]:
        """Operations from a (recorded) tool list; the allow-list and configured effects apply."""
        allowed = self._settings.tools
        specs = {}
        for tool in tools:
            name = str(tool["name"])
            if allowed is not None and name not in allowed:
                continue
            effect = self._settings.effects.get(name) or effect_of(tool.get("annotations"))
            specs[name] = OperationSpec(
                name=name,
                effect=effect,
                arguments=_arguments_model(name, tool.get("input_schema") or {"type": "object"}),
                description=str(tool.get("description") or ""),
            )
        return specs

    async def invoke(self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str) -> Any:
        allowed = self._settings.tools
        if allowed is not None and spec.name not in allowed:
            raise ConnectorRejected(
                self._name, f"tool {spec.name!r} is not in the allow-list (tools = [...]); add it to call it"
            )
        meta = {IDEMPOTENCY_META: idempotency_key}
        result = await self._session(
            f"calling {spec.name}",
            lambda client: client.call_tool(spec.name, arguments.model_dump(mode="json"), meta=meta),
        )
        text = "\n".join(str(getattr(block, "text", "")) for block in result.content if block.type == "text")
        if result.is_error:
            raise ConnectorRejected(self._name, f"tool {spec.name} failed: {text[:_MAX_ERROR_TEXT]}")
        return result.structured_content if result.structured_content is not None else text

    async def aclose(self) -> None:
        """Nothing to close: every call's connection is closed when the call ends."""

    async def _session(self, doing: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Connect, do ``work`` with the client, disconnect: each phase under its own hard deadline.

        One cancel scope spans the whole connection (the SDK's task groups must nest inside it); its
        deadline is moved from the connect timeout to the call timeout once connected."""
        from mcp import Client

        settings = self._settings
        phase = f"of connecting (connect_timeout {settings.connect_timeout:g}s)"
        refusals: list[int] = []  # HTTP statuses >= 400: the SDK reports them only as a generic error
        try:
            async with contextlib.AsyncExitStack() as stack:
                target = await self._target(stack, refusals)
                with anyio.CancelScope(deadline=anyio.current_time() + settings.connect_timeout) as scope:
                    async with Client(target) as client:
                        phase = f"{doing} (call_timeout {settings.call_timeout:g}s)"
                        scope.deadline = anyio.current_time() + settings.call_timeout
                        return await work(client)
        except ConnectorError:
            raise
        except Exception as e:
            raise self._failure(e, doing, refusals[-1] if refusals else None) from e
        raise ConnectorTimeout(self._name, f"the server gave no answer in time {phase}")

    async def _target(self, stack: contextlib.AsyncExitStack, refusals: list[int]) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client

        settings = self._settings
        where = f"[connectors.{self._name}]"
        if self._server is not None:
            return self._server
        if settings.command is not None:
            env = {
                name: (await self._credentials.resolve(ref, f"{where} env.{name}")).reveal()
                for name, ref in settings.env.items()
            }
            return StdioServerParameters(
                command=settings.command[0], args=settings.command[1:], env=env or None
            )
        import httpx2

        headers = {
            name: (await self._credentials.resolve(ref, f"{where} headers.{name}")).reveal()
            for name, ref in settings.headers.items()
        }

        async def note(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                refusals.append(response.status_code)

        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers=headers, timeout=settings.call_timeout, event_hooks={"response": [note]}
            )
        )
        assert settings.url is not None
        return streamable_http_client(settings.url, http_client=http)

    def _failure(self, error: BaseException, doing: str, status: int | None) -> ConnectorError:
        """The crewline error for what went wrong ``doing``; it never quotes a header or credential."""
        if status in (401, 403):
            return ConnectorAuthError(
                self._name,
                f"the server refused the credentials ({status}) {doing}; check the references in "
                f"[connectors.{self._name}] headers",
                status=status,
            )
        if status is not None and 400 <= status < 500:
            return ConnectorRejected(self._name, f"the server answered {status} {doing}", status=status)
        if status is not None or _is_connection_error(error):
            where = "the server" if status is None else f"the server (status {status})"
            return ConnectorUnavailable(
                self._name, f"{where} could not be reached {doing}; check that it runs and the url/command"
            )
        leaf = _leaves(error)[-1]
        return ConnectorRejected(self._name, f"{type(leaf).__name__} {doing}: {str(leaf)[:_MAX_ERROR_TEXT]}")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    found = [error]
    if error.__cause__ is not None:
        found += _leaves(error.__cause__)
    return found


def _is_connection_error(error: BaseException) -> bool:
    return any(
        isinstance(leaf, OSError | ConnectionError) or "Connect" in type(leaf).__name__
        for leaf in _leaves(error)
    )


def _problems(name: str, settings: ConnectorSettings, credentials: Credentials) -> list[str]:
    assert isinstance(settings, McpSettings)
    where = f"[connectors.{name}]"
    refs = [(f"{where} headers.{k}", v) for k, v in settings.headers.items()]
    refs += [(f"{where} env.{k}", v) for k, v in settings.env.items()]
    return [problem for place, ref in refs for problem in credentials.problems(ref, place)]


CONNECTOR = ConnectorType(settings=McpSettings, build=McpConnector, problems=_problems)
