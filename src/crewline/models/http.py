"""The gateway's HTTP/1.1 client: keep-alive connections per origin, on asyncio protocols and httptools.

Every model call goes through here, and through the proxy every call an operator's tools make, so the
client is on the hot path twice over. A general-purpose client (httpx over httpcore) spent about 60% of
the proxy's per-call CPU in its own layers — request and response models, pool bookkeeping, anyio
wrappers — on a path that only ever does one thing: send a small JSON body to a known origin and read
the reply whole or as a stream of lines. This client does just that: the request head is formatted in
one go, written with the body in a single ``write``, and the reply is parsed by httptools (the C parser
uvicorn uses) straight from ``data_received``, with no task or stream per connection.

What it keeps from a full client: a bounded pool per origin (idle connections reused LIFO, a waiting
queue when the bound is reached), TLS with certificate checks, gzip replies, per-wait timeouts (a reply
that makes no progress for ``timeout`` seconds fails; a slow stream that keeps sending does not), back
pressure on streams, and the ``HTTP(S)_PROXY`` / ``NO_PROXY`` environment: an origin reached through a
proxy is handed to httpx, which speaks CONNECT. A connection the server closed while idle is noticed
(its EOF arrives) and not reused; if the close races the request and the server answers nothing at all,
the request is sent once more on a fresh connection — the server dropped it unread.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import httptools

__all__ = ["HttpClient", "HttpError", "HttpTimeout", "Reply", "StreamReply"]

_USER_AGENT = "crewline"
_HIGH_WATER = 1 << 20  # bytes buffered from a stream before reading from the socket pauses


class HttpError(Exception):
    """The request failed in transport: refused, reset, cut off, or not HTTP."""


class HttpTimeout(HttpError):
    """No progress (connection, reply head or the next bytes) within the timeout."""


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    host_header: str
    proxied: bool


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    content: bytes


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses replies as bytes arrive and wakes whoever waits for them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.alive = True
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.keep_alive = False
        self.done = False
        self.got_bytes = False
        self.body: deque[bytes] = deque()
        self.buffered = 0

    # -- protocol callbacks ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(HttpError(f"malformed HTTP reply: {e}"))
            return
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.alive = False
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.head_done and not self.done and self._reads_to_eof():
            self.done = True  # a body delimited by the connection's end
        elif not self.done:
            reason = f": {exc}" if exc else ""
            what = "while sending the reply" if self.got_bytes else "without a reply"
            self._fail(HttpError(f"the server closed the connection {what}{reason}"))
        self._wake()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim reply: the real one follows on the same connection
            self.headers = {}
            return
        self.head_done = True
        # Asked now: once the message is complete the parser has moved on and forgets.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True

    # -- waiting ---------------------------------------------------------------------------------------

    def _reads_to_eof(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until more of the reply arrived (or it ended, or failed)."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self.loop.create_future()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            waiter.cancel()

        handle = self.loop.call_later(timeout, expire)
        try:
            await waiter
        except asyncio.CancelledError:
            if expired:
                raise HttpTimeout(f"no reply within {timeout:g}s") from None
            raise
        finally:
            handle.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    def take(self) -> bytes:
        data = b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)

    def reusable(self) -> bool:
        return self.alive and self.done and self.keep_alive and self._error is None

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Pool:
    limit: int
    idle: list[_Conn] = field(default_factory=list)
    active: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class _Body:
    """Reading a reply's body: ``iter_bytes``, ``iter_lines`` and ``read`` over the former."""

    status: int
    headers: dict[str, str]

    def iter_bytes(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def iter_lines(self) -> AsyncIterator[str]:
        """Lines of the body without their ending (``\\n``, ``\\r\\n`` or ``\\r``), decoded as UTF-8."""
        pending = b""
        async for data in self.iter_bytes():
            lines = (pending + data).splitlines(keepends=True)
            last = lines[-1] if lines else b""
            # An unterminated tail, or one ending in "\r" that may be the first half of "\r\n", waits.
            pending = lines.pop() if last and (last[-1:] not in b"\r\n" or last.endswith(b"\r")) else b""
            for line in lines:
                yield line.rstrip(b"\r\n").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r\n").decode("utf-8", "replace")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes()])


class StreamReply(_Body):
    """A reply whose body is read as it arrives, inside ``client.stream``."""

    def __init__(self, conn: _Conn, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self.status = conn.status
        self.headers = conn.headers
        self._decoder = _decoder(conn.headers)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                data = conn.take()
                if self._decoder is not None:
                    data = self._decoder.decompress(data)
                if data:
                    yield data
                continue
            if conn.done:
                if self._decoder is not None and (tail := self._decoder.flush()):
                    yield tail
                return
            await conn.wait(self._timeout)


class HttpClient:
    """Pooled HTTP/1.1 client for the model gateway; one per gateway, closed with it."""

    def __init__(self, *, max_connections: int = 256, idle_seconds: float = 60.0) -> None:
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._origins: dict[str, _Origin] = {}
        self._ssl: ssl.SSLContext | None = None
        self._fallback: Any = None  # httpx.AsyncClient for origins behind a proxy, made when needed
        self._closed = False
        self.opened = 0  # connections opened so far: how well keep-alive works, for tests and metrics

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        """Send a request and read the whole reply."""
        async with self.stream(
            method, url, body=body, headers=headers, params=params, timeout=timeout
        ) as reply:
            content = await reply.read()
        return Reply(reply.status, reply.headers, content)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> AsyncIterator[_Body]:
        """Send a request; the reply's head is read, its body is read by the caller inside the block."""
        if self._closed:
            raise HttpError("the HTTP client is closed")
        origin, target = self._split(url, params)
        if origin.proxied:
            async with self._via_proxy(method, url, body, headers, params, timeout) as reply:
                yield reply
            return
        head = _head(method, target, origin.host_header, headers, len(body) if body is not None else None)
        data = head + body if body else head
        conn = await self._send(origin, data, timeout)
        ok = False
        try:
            yield StreamReply(conn, timeout)
            ok = conn.done
        finally:
            self._release(origin, conn, reuse=ok and conn.reusable())

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(HttpError("the HTTP client is closed"))
        if self._fallback is not None:
            await self._fallback.aclose()

    # -- connections -----------------------------------------------------------------------------------

    async def _send(self, origin: _Origin, data: bytes, timeout: float) -> _Conn:
        """Write the request on a pooled (or new) connection and wait for the reply's head."""
        for attempt in (1, 2):
            conn, reused = await self._acquire(origin, timeout)
            idle_for = time.monotonic() - conn.idle_since
            try:
                conn.send(data)
                while not conn.head_done:
                    await conn.wait(timeout)
                return conn
            except HttpTimeout:
                self._release(origin, conn, reuse=False)
                raise
            except HttpError:
                self._release(origin, conn, reuse=False)
                # The server closed an idle keep-alive connection as the request went out, having read
                # nothing of it: send it once more on a new connection.
                if attempt == 1 and reused and not conn.got_bytes and idle_for > 0.5:
                    continue
                raise
            except BaseException:
                self._release(origin, conn, reuse=False)
                raise
        raise AssertionError("unreachable")

    async def _acquire(self, origin: _Origin, timeout: float) -> tuple[_Conn, bool]:
        key = (origin.scheme, origin.host, origin.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self.max_connections)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = time.monotonic()
            while pool.idle:
                conn = pool.idle.pop()
                if conn.alive and now - conn.idle_since < self.idle_seconds:
                    return conn, True
                pool.active -= 1
                conn.close()
            if pool.active < pool.limit:
                break
            waiter = loop.create_future()
            pool.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, deadline - loop.time())
            except TimeoutError:
                raise HttpTimeout(f"no free connection to {origin.host} within {timeout:g}s") from None
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
        pool.active += 1
        try:
            return await self._connect(origin, timeout), False
        except BaseException:
            pool.active -= 1
            self._wake_one(pool)
            raise

    async def _connect(self, origin: _Origin, timeout: float) -> _Conn:
        loop = asyncio.get_running_loop()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                )
        except TimeoutError:
            raise HttpTimeout(
                f"could not connect to {origin.host}:{origin.port} within {timeout:g}s"
            ) from None
        except OSError as e:
            raise HttpError(f"cannot connect to {origin.host}:{origin.port}: {e.strerror or e}") from e
        self.opened += 1
        return conn

    def _release(self, origin: _Origin, conn: _Conn, *, reuse: bool) -> None:
        pool = self._pools[(origin.scheme, origin.host, origin.port)]
        if reuse and not self._closed:
            conn.idle_since = time.monotonic()
            pool.idle.append(conn)
        else:
            conn.close()
            pool.active -= 1
        self._wake_one(pool)

    @staticmethod
    def _wake_one(pool: _Pool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- URLs and proxies ------------------------------------------------------------------------------

    def _split(self, url: str, params: Mapping[str, str] | None) -> tuple[_Origin, str]:
        scheme, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        origin = self._origins.get(scheme + "://" + authority)
        if origin is None:
            origin = self._origins[scheme + "://" + authority] = _origin_of(url)
        target = slash + path if slash else "/"
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        return origin, target

    @asynccontextmanager
    async def _via_proxy(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        timeout: float,
    ) -> AsyncIterator[_Body]:
        import httpx

        if self._fallback is None:
            self._fallback = httpx.AsyncClient(trust_env=True, timeout=timeout)
        request = self._fallback.build_request(
            method, url, content=body, headers=dict(headers or {}), params=params, timeout=timeout
        )
        try:
            resp = await self._fallback.send(request, stream=True)
        except httpx.TimeoutException as e:
            raise HttpTimeout(f"no reply through the proxy within {timeout:g}s") from e
        except httpx.HTTPError as e:
            raise HttpError(f"{type(e).__name__}: {e}") from e
        try:
            yield _ProxiedReply(resp, timeout)
        finally:
            await resp.aclose()


class _ProxiedReply(_Body):
    """The :class:`StreamReply` interface over an httpx response (origins reached through a proxy)."""

    def __init__(self, resp: Any, timeout: float) -> None:
        self._resp = resp
        self._timeout = timeout
        self.status = int(resp.status_code)
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as e:
            raise HttpTimeout(f"no reply within {self._timeout:g}s") from e
        except httpx.HTTPError as e:
            raise HttpError(f"{type(e).__name__}: {e}") from e


def _origin_of(url: str) -> _Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default else f":{port}")
    proxies = urllib.request.getproxies_environment()
    proxied = bool(
        (proxies.get(parts.scheme) or proxies.get("all"))
        and not urllib.request.proxy_bypass_environment(parts.hostname, proxies)  # type: ignore[attr-defined]
    )
    return _Origin(parts.scheme, parts.hostname, port, host_header, proxied)


def _head(
    method: str, target: str, host: str, headers: Mapping[str, str] | None, length: int | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    given = {k.lower() for k in headers} if headers else set()
    if "user-agent" not in given:
        lines.append(f"user-agent: {_USER_AGENT}")
    if "accept-encoding" not in given:
        lines.append("accept-encoding: gzip")
    if length is not None:
        lines.append(f"content-length: {length}")
    if headers:
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise HttpError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as e:
        raise HttpError(
            f"a request header holds a character HTTP cannot carry: {e.object[e.start : e.end]!r}"
        ) from None


def _decoder(headers: Mapping[str, str]) -> Any:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None
