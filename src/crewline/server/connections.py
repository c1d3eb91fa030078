"""Limits on what a client may send and hold open before its request reaches the application.

uvicorn buffers a request's header block until it is complete, without bound under httptools (which also
copies the growing header at every read: a 200 MB header takes the event loop most of a minute) and with
a 400 past 16 KB under h11; it waits for that block forever and accepts any number of connections from
one address. These limits are enforced in the connection's protocol, on the bytes as they arrive and
before the parser buffers them, so they hold for every route (the API and the proxy's fast path alike),
on either event loop and either HTTP parser:

- a header block larger than ``[server] max_header_size`` or with more than ``max_headers`` fields gets
  431 and the connection is closed;
- a connection that has not sent a whole header block ``header_timeout`` after it opened (or after the
  first byte of a later request on it) is closed, with 408 if it had started one;
- an address that holds ``max_connections_per_client`` connections has further ones answered 429.

The scan looks for the blank line ending the header block and counts lines up to it; when a request's
head begins and ends is taken from the parser, so a body is never mistaken for a header.
:func:`uvicorn_config` is how ``crewline serve`` (and the tests) configure uvicorn.
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any, ClassVar, Literal

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import ServerConfig
from .errors import error_body

__all__ = ["HttpParser", "uvicorn_config"]

HttpParser = Literal["h11", "httptools"]

_END_OF_HEAD = b"\r\n\r\n"
# After a rejection the client may still be sending: reading (and dropping) a little more of it, for a
# moment, before closing lets it read the answer instead of losing it to a connection reset.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 1024
# What a parser may hold past the scan's count: the rest of one read, when requests are pipelined.
_READ_SIZE = 256 * 1024


def uvicorn_config(
    api: Any, config: ServerConfig, http: HttpParser = "httptools", **options: Any
) -> uvicorn.Config:
    """uvicorn's configuration for serving ``api`` with the connection limits of ``config``."""
    return uvicorn.Config(
        api,
        http=_http_protocol(config, http),
        h11_max_incomplete_event_size=config.max_header_size + _READ_SIZE,
        # No route speaks WebSocket, and an upgraded connection would leave the protocol that counts it.
        ws="none",
        **options,
    )


def _http_protocol(config: ServerConfig, http: HttpParser = "httptools") -> type[asyncio.Protocol]:
    """uvicorn's protocol class for ``http``, enforcing ``config``'s limits; one class per server, since
    its connections share the count per address and the clock on late headers."""
    base = _HttpToolsGuard if http == "httptools" else _H11Guard
    attributes = {"limits": config, "shared": _Shared(config)}
    return type(base.__name__.lstrip("_"), (base,), attributes)


class _Shared:
    """What one server's connections share: how many each address holds open, and which are waiting for
    a request head since when. One timer sweeps the late ones out, rather than a timer per request:
    arming and cancelling one costs several times more than scanning the head it guards."""

    def __init__(self, limits: ServerConfig) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}
        self.waiting: dict[_Guard, float] = {}
        self.sweep: asyncio.TimerHandle | None = None
        self.interval = min(max(limits.header_timeout / 4, 0.01), 1.0)

    def admit(self, host: str) -> bool:
        count = self.open.get(host, 0)
        if count >= self.limits.max_connections_per_client:
            return False
        self.open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        count = self.open.pop(host) - 1
        if count:
            self.open[host] = count

    def wait(self, guard: _Guard, loop: asyncio.AbstractEventLoop) -> None:
        self.waiting[guard] = loop.time()
        if self.sweep is None:
            self.sweep = loop.call_later(self.interval, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sweep = None
        deadline = loop.time() - self.limits.header_timeout
        for guard in [guard for guard, since in self.waiting.items() if since <= deadline]:
            guard.timed_out()
        if self.waiting:
            self.sweep = loop.call_later(self.interval, self._expire, loop)


class _Guard(asyncio.Protocol):
    """The limits, in front of a uvicorn protocol; subclasses say when a request's head begins and ends."""

    limits: ClassVar[ServerConfig]
    shared: ClassVar[_Shared]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None

    _host: str | None = None
    _in_head = True
    _waiting = False  # in shared.waiting: the head's clock is running
    _head_size = 0
    _head_lines = 0
    _tail = b""
    _lingering = -1  # bytes still to drop before closing; -1 while the connection is in use
    _close_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None and not self.shared.admit(host):
            limit = self.limits.max_connections_per_client
            self._reject(429, "too_many_connections", f"this address already has {limit} connections open")
            return
        self._host = host
        self._start_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._host is not None:
            self.shared.release(self._host)
            self._host = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._linger(len(data))
            return
        if self._in_head:
            if not self._waiting:
                self._start_clock()
            if not self._scan(data):
                return
        super().data_received(data)

    def timed_out(self) -> None:
        """The head did not arrive in time: 408 if one was started, else just close."""
        self._stop_clock()
        if self._head_size == 0:
            self.transport.close()
            return
        seconds = f"{self.limits.header_timeout:g}"
        self._reject(408, "request_timeout", f"the request's headers did not all arrive within {seconds}s")

    def _scan(self, data: bytes) -> bool:
        """Count ``data`` into the head being received; False if that broke a limit (and was answered)."""
        joined = self._tail + data if self._tail else data
        end = joined.find(_END_OF_HEAD)
        used = len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail)
        self._head_size += used
        self._head_lines += data.count(b"\n", 0, used)
        limits = self.limits
        # Lines: the request line, the fields, and the blank line once the head is complete.
        if self._head_lines > limits.max_headers + 2:
            message = f"more than {limits.max_headers} header fields; send fewer"
        elif self._head_size > limits.max_header_size:
            message = f"the request's headers are larger than {limits.max_header_size} bytes; send less"
        elif end < 0:
            self._tail = joined[-(len(_END_OF_HEAD) - 1) :]
            return True
        else:
            self._end_head()
            return True
        self._reject(431, "request_header_fields_too_large", message)
        return False

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_size = self._head_lines = 0
        self._tail = b""

    def _end_head(self) -> None:
        self._in_head = False
        self._stop_clock()

    def _start_clock(self) -> None:
        self._waiting = True
        self.shared.wait(self, self.loop)

    def _stop_clock(self) -> None:
        if self._waiting:
            self._waiting = False
            del self.shared.waiting[self]

    def _answering(self) -> bool:
        """Whether a response to an earlier request on this connection is being written."""
        raise NotImplementedError

    def _reject(self, status: int, type_: str, message: str) -> None:
        self._stop_clock()
        if self._answering() or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write(_response(status, type_, message))
        self.transport.write_eof()
        self._lingering = _LINGER_BYTES
        self._close_timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _linger(self, size: int) -> None:
        self._lingering = max(self._lingering - size, 0)
        if self._lingering == 0:
            self.transport.close()


class _HttpToolsGuard(_Guard, HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._begin_head()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete


class _H11Guard(_Guard, H11Protocol):
    def data_received(self, data: bytes) -> None:
        # h11 waits for a new request head exactly while the client's side is idle (it leaves that state
        # on the request line and headers, and returns to it once the response to them is out).
        if not self._in_head and self.conn.their_state is h11.IDLE:
            self._begin_head()
        super().data_received(data)

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete


def _response(status: int, type_: str, message: str) -> bytes:
    body = json.dumps(error_body(type_, message)).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
