"""crewline as an MCP server: the tools of :mod:`.mcp_tools` over streamable HTTP (``/mcp``) or stdio.

Built on the official SDK's low-level ``Server`` (protocol 2026-07-28 and the handshake era): the tools'
schemas come from their pydantic argument models, and every failure a caller can cause — a key without
the scope, bad arguments, an unknown run — is a tool error whose message says what to change, never a
traceback. Over HTTP the endpoint is stateless: each request carries its API key (``Authorization:
Bearer`` or ``X-API-Key``), authenticated before the SDK sees the request and checked against the
tool's action on each call, exactly as the REST routes check theirs. ``Host`` and ``Origin`` are checked
first, so a web page cannot drive a server on loopback through DNS rebinding (``[mcp]`` in
crewline.toml widens the lists). Over stdio (``crewline mcp``) the key comes from the environment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
import pydantic
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ..app import App
from ..errors import CrewlineError
from ..store.payloads import dump, load_json
from .auth import Authenticator
from .config import McpConfig
from .errors import ApiError, client_error, error_body
from .mcp_tools import TOOLS, McpTool

__all__ = ["Caller", "McpEndpoint", "build_server"]

log = logging.getLogger("crewline.server.mcp")

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_SHOWN = 100  # of a refused Host or Origin, echoed in the error


@dataclass(frozen=True)
class Caller:
    """Who calls a tool: the API key as sent, and the client address failures are counted against."""

    token: str | None
    address: str | None = None


_CALLER: ContextVar[Caller] = ContextVar("crewline_mcp_caller")


def build_server(app: App, auth: Authenticator, caller: Callable[[], Caller]) -> Server[Any]:
    """The MCP server for ``app``; ``caller`` says who makes the request being served."""
    by_name = {tool.name: tool for tool in TOOLS}

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_describe(tool) for tool in TOOLS])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            return _failed(f"no tool {params.name!r}; the tools are: {', '.join(by_name)}")
        try:
            who = caller()
            key = await auth.check(who.token, tool.action, who.address)
            arguments = tool.arguments.model_validate(params.arguments or {})
            result = load_json(dump(await tool.run(app, key, arguments), "result"))
        except ApiError as e:
            return _failed(e.message)
        except pydantic.ValidationError as e:
            return _failed(_invalid(tool, e))
        except CrewlineError as e:
            message = client_error(e)
            if message is None:
                log.error("MCP tool %s failed", tool.name, exc_info=e)
                return _failed(f"{tool.name} failed on the server; details are in its log")
            return _failed(message)
        except Exception as e:
            log.error("MCP tool %s failed", tool.name, exc_info=e)
            return _failed(f"{tool.name} failed on the server; details are in its log")
        text = dump(result).decode()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=result
        )

    return Server(
        "crewline",
        instructions="Start crewline workflows, follow their runs, decide reviews and search memory.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _describe(tool: McpTool) -> types.Tool:
    schema = tool.arguments.model_json_schema()
    schema.pop("title", None)
    return types.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=schema,
        annotations=types.ToolAnnotations(
            read_only_hint=tool.read_only,
            destructive_hint=False,
            idempotent_hint=tool.read_only or tool.idempotent,
            open_world_hint=False,
        ),
    )


def _failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _invalid(tool: McpTool, error: pydantic.ValidationError) -> str:
    # The offending values are left out: they are the caller's data and may be large or secret.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()[:5]
    )
    return f"invalid arguments for {tool.name}: {problems} (the tool's input schema lists its arguments)"


class McpEndpoint:
    """``/mcp``: checks Host and Origin, authenticates the key, then lets the SDK serve the request."""

    def __init__(self, app: App, auth: Authenticator, config: McpConfig, public_url: str | None) -> None:
        self._auth = auth
        self._hosts = _Allowed.build(config, public_url)
        server = build_server(app, auth, _CALLER.get)
        # security_settings None: the SDK checks only Content-Type; Host and Origin are checked above it.
        self._manager = StreamableHTTPSessionManager(server, json_response=True, stateless=True)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        refusal = self._hosts.refusal(request.headers.get("host"), request.headers.get("origin"))
        if refusal is None:
            refusal = await self._authenticate(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        reset = _CALLER.set(Caller(_token(request), _address(request)))
        try:
            await self._manager.handle_request(scope, receive, send)
        finally:
            _CALLER.reset(reset)

    async def _authenticate(self, request: Request) -> JSONResponse | None:
        try:
            await self._auth.authenticate(_token(request), _address(request))
        except ApiError as e:
            return JSONResponse(error_body(e.type, e.message), e.status, headers=e.headers or None)
        return None


def _token(request: Request) -> str | None:
    bearer = request.headers.get("authorization", "")
    scheme, _, credentials = bearer.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key")


def _address(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


@dataclass(frozen=True)
class _Allowed:
    hosts: frozenset[tuple[str, int | None]]  # (name, port); port None: any
    origins: frozenset[str]

    @classmethod
    def build(cls, config: McpConfig, public_url: str | None) -> _Allowed:
        hosts: set[tuple[str, int | None]] = {(name, None) for name in _LOOPBACK}
        origins = set(config.allowed_origins)
        for entry in config.allowed_hosts:
            hosts.add(_split_host(entry) or (entry, None))
        if public_url:
            parts = urlsplit(public_url)
            if parts.hostname:
                hosts.add((parts.hostname, parts.port))
                origins.add(f"{parts.scheme}://{parts.netloc}".lower())
        return cls(frozenset(hosts), frozenset(origins))

    def refusal(self, host: str | None, origin: str | None) -> JSONResponse | None:
        if not self._host_allowed(host):
            shown = (host or "")[:_MAX_SHOWN]
            return JSONResponse(
                error_body(
                    "host_not_allowed",
                    f"the MCP endpoint does not answer to Host {shown!r}; if clients reach this server by that "
                    "name, add it to [mcp] allowed_hosts in crewline.toml",
                ),
                421,
            )
        if origin is not None and not self._origin_allowed(origin):
            return JSONResponse(
                error_body(
                    "origin_not_allowed",
                    f"requests from web pages of Origin {origin[:_MAX_SHOWN]!r} may not use the MCP "
                    "endpoint; if that site is yours, add it to [mcp] allowed_origins in crewline.toml",
                ),
                403,
            )
        return None

    def _host_allowed(self, host: str | None) -> bool:
        split = _split_host(host or "")
        if split is None:
            return False
        name, port = split
        return (name, None) in self.hosts or (name, port) in self.hosts

    def _origin_allowed(self, origin: str) -> bool:
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            return False
        if parts.scheme in ("http", "https") and hostname in _LOOPBACK:
            return True
        return origin.lower().rstrip("/") in self.origins


def _split_host(host: str) -> tuple[str, int | None] | None:
    """``name[:port]`` of a Host header, lower case; None when it is not one."""
    try:
        parts = urlsplit(f"//{host}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.path or parts.query or parts.username is not None:
        return None
    return name.lower(), port
