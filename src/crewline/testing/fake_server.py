"""A fake model provider: a real HTTP/1.1 server on loopback speaking the OpenAI (chat completions and
Responses), Anthropic, Gemini and Ollama wire formats, with scripted replies, fault injection and fixed
latency.

    with FakeProvider() as fake:
        fake.reply("hello")                          # next reply, any format
        fake.fault(Fault.rate_limit(retry_after=1))  # next request gets a 429 with retry-after
        fake.fault_mix(0.3, [Fault.http(500), Fault.timeout(2)], seed=1)  # then 30% of all requests fail
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="test")

It runs its own event loop in a thread, so sync and async clients (and official SDKs) can use it alike.
``python -m crewline.testing`` serves it standalone (for benchmarks) and prints its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .wire import Reply, WireFormat, format_for_path

__all__ = ["FakeProvider", "Fault", "Reply", "SeenRequest"]

FaultKind = Literal["status", "timeout", "truncate", "malformed", "disconnect"]


@dataclass
class Fault:
    """A failure to inject into the next matching request(s). Build with the class methods."""

    kind: FaultKind
    status: int = 500
    message: str = "injected failure"
    retry_after: float | None = None
    seconds: float = 30.0
    after_chunks: int = 1
    hard: bool = True  # truncate: drop the connection (True) or end the stream cleanly but early (False)
    times: int = 1
    path: str | None = None  # only requests whose path contains this

    @classmethod
    def http(
        cls,
        status: int,
        message: str = "injected failure",
        *,
        times: int = 1,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        return cls("status", status=status, message=message, times=times, path=path, retry_after=retry_after)

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0, *, times: int = 1, path: str | None = None) -> Fault:
        return cls(
            "status",
            status=429,
            message="rate limit reached",
            retry_after=retry_after,
            times=times,
            path=path,
        )

    @classmethod
    def timeout(cls, seconds: float = 30.0, *, times: int = 1, path: str | None = None) -> Fault:
        """Hold the request ``seconds`` without answering, then drop the connection."""
        return cls("timeout", seconds=seconds, times=times, path=path)

    @classmethod
    def truncate(
        cls, after_chunks: int = 1, *, hard: bool = True, times: int = 1, path: str | None = None
    ) -> Fault:
        """Cut the reply off: streams after ``after_chunks`` events, plain replies halfway through the body."""
        return cls("truncate", after_chunks=after_chunks, hard=hard, times=times, path=path)

    @classmethod
    def malformed(cls, *, times: int = 1, path: str | None = None) -> Fault:
        """Answer 200 with a body (or stream event) that is not JSON."""
        return cls("malformed", times=times, path=path)

    @classmethod
    def disconnect(cls, *, times: int = 1, path: str | None = None) -> Fault:
        """Close the connection without any reply."""
        return cls("disconnect", times=times, path=path)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    format: str = ""
    at: float = field(default_factory=time.time)  # when it arrived, seconds since the epoch


@dataclass
class _Script:
    replies: deque[Reply] = field(default_factory=deque)
    faults: list[Fault] = field(default_factory=list)
    mix: tuple[Fault, ...] = ()
    mix_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


class FakeProvider:
    """The fake server. ``latency`` seconds are added before every reply (and each stream event).

    ``requests`` lists every request seen (with ``record``); ``answered`` those given a whole successful
    reply, the calls a real provider would bill.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        stream_latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        record: bool = True,
    ) -> None:
        self.latency = latency
        self.stream_latency = stream_latency
        self.host = host
        self.port = port
        self.api_key = api_key
        self.record = record
        self.requests: list[SeenRequest] = []
        self.answered: list[SeenRequest] = []
        self._script = _Script()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- scripting --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reply(
        self,
        text: str | None = None,
        *,
        tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
        json: Any = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish: str | None = None,
        times: int = 1,
    ) -> FakeProvider:
        """Queue the next reply(ies); without any queued, the server echoes or fills the asked-for schema."""
        r = Reply(text, list(tool_calls or []), json, input_tokens, output_tokens, finish)
        with self._lock:
            self._script.replies.extend([r] * times)
        return self

    def fault(self, fault: Fault) -> FakeProvider:
        with self._lock:
            self._script.faults.append(fault)
        return self

    def fault_mix(self, rate: float, faults: Sequence[Fault], *, seed: int | None = None) -> FakeProvider:
        """From now on, fail each request that no queued fault matches with probability ``rate``, by one of
        ``faults`` drawn at random (their ``times`` and ``path`` are ignored); ``rate`` 0 stops it."""
        if not 0.0 <= rate <= 1.0 or (rate and not faults):
            raise ValueError("fault_mix needs a rate between 0 and 1 and at least one fault")
        with self._lock:
            self._script.mix, self._script.mix_rate = tuple(faults), rate
            self._script.rng = random.Random(seed)
        return self

    def reset(self) -> None:
        with self._lock:
            self._script = _Script()
            self.requests.clear()
            self.answered.clear()

    def _next(self, path: str) -> tuple[Fault | None, Reply | None]:
        with self._lock:
            fault = next((f for f in self._script.faults if f.path is None or f.path in path), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._script.faults.remove(fault)
                return fault, None
            script = self._script
            if script.mix_rate and script.rng.random() < script.mix_rate:
                return script.rng.choice(script.mix), None
            return None, script.replies.popleft() if script.replies else None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, limit=2**24)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="crewline-fake-provider", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProvider:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    # -- HTTP -------------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await _read_body(reader, headers)
        parts = urlsplit(target)
        return await self._dispatch(method, parts.path, parts.query, headers, raw, writer)

    async def _dispatch(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        raw: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        found = format_for_path(path)
        if method == "GET" and path.endswith("/models"):
            return await _send(
                writer, 200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
            )
        if found is None or method != "POST":
            return await _send(writer, 404, {"error": {"message": f"no route for {method} {path}"}})
        fmt_cls, is_embed = found
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return await _send(writer, 400, fmt_cls({}, path).error(400, "request body is not JSON"))
        wire = fmt_cls(body, path)
        seen = SeenRequest(method, path, query, headers, body, wire.name)
        if self.record:
            with self._lock:
                self.requests.append(seen)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.api_key is not None and not self._authorised(headers, query):
            return await _send(writer, 401, wire.error(401, "invalid api key"))
        fault, reply = self._next(path)
        if fault is not None and fault.kind != "truncate" and fault.kind != "malformed":
            return await self._fail(fault, wire, writer)
        if is_embed and fault is not None:
            return await self._fail(fault, wire, writer)
        reply = reply or wire.default_reply()
        if wire.streaming() and not is_embed:
            return await self._stream(wire, reply, fault, writer, seen)
        if fault is not None:
            return await self._fail(fault, wire, writer, wire.complete(reply))
        return await self._answered(
            seen, _send(writer, 200, wire.embed() if is_embed else wire.complete(reply))
        )

    async def _answered(self, seen: SeenRequest, last_write: Awaitable[bool]) -> bool:
        """Record ``seen`` as answered before the reply's last bytes go out, so a client that has read the
        whole reply always finds it recorded; taken back if that write fails."""
        with self._lock:
            self.answered.append(seen)
        try:
            return await last_write
        except BaseException:
            with self._lock:
                self.answered.remove(seen)
            raise

    def _authorised(self, headers: dict[str, str], query: str) -> bool:
        key = self.api_key
        return key is not None and (
            headers.get("authorization") == f"Bearer {key}"
            or headers.get("x-api-key") == key
            or headers.get("x-goog-api-key") == key
            or f"key={key}" in query
        )

    async def _fail(
        self, fault: Fault, wire: WireFormat, writer: asyncio.StreamWriter, payload: Any = None
    ) -> bool:
        if fault.kind == "status":
            body, extra = wire.error(fault.status, fault.message), {}
            if fault.retry_after is not None:
                body, header = wire.retry_info(body, fault.retry_after)
                extra = {"retry-after": f"{fault.retry_after:g}"} if header else {}
            return await _send(writer, fault.status, body, extra)
        if fault.kind == "timeout":
            await asyncio.sleep(fault.seconds)
            return False
        if fault.kind == "malformed":
            return await _send(writer, 200, b'{"id": "broken", "choices": [', raw=True)
        if fault.kind == "truncate":
            data = json.dumps(payload).encode()
            head = _head(200, "application/json", {"content-length": str(len(data))})
            writer.write(head + data[: len(data) // 2])
            await writer.drain()
            return False
        return False  # disconnect

    async def _stream(
        self,
        wire: WireFormat,
        reply: Reply,
        fault: Fault | None,
        writer: asyncio.StreamWriter,
        seen: SeenRequest,
    ) -> bool:
        writer.write(
            _head(
                200, wire.stream_content_type, {"transfer-encoding": "chunked", "cache-control": "no-cache"}
            )
        )
        for i, event in enumerate(wire.stream(reply)):
            if fault is not None and fault.kind == "malformed" and i == 1:
                event = wire.malformed_event()
            if fault is not None and fault.kind == "truncate" and i >= fault.after_chunks:
                if fault.hard:
                    await writer.drain()
                    return False
                break
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            if self.stream_latency:
                await asyncio.sleep(self.stream_latency)
        last_write = _send_raw(writer, b"0\r\n\r\n")
        # A stream cut short or spoiled by a fault is not an answer, even though it ends cleanly.
        return await (self._answered(seen, last_write) if fault is None else last_write)


async def _send_raw(writer: asyncio.StreamWriter, data: bytes) -> bool:
    writer.write(data)
    await writer.drain()
    return True


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
    return b""


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def _head(status: int, content_type: str, extra: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"content-type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: Any,
    extra: dict[str, str] | None = None,
    *,
    raw: bool = False,
) -> bool:
    data = payload if raw else json.dumps(payload).encode()
    head = _head(status, "application/json", {"content-length": str(len(data)), **(extra or {})})
    return await _send_raw(writer, head + data)


def main() -> None:  # pragma: no cover - exercised by bench/gateway.py
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Serve the crewline fake model provider on loopback.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every reply")
    args = parser.parse_args()
    fake = FakeProvider(port=args.port, latency=args.latency, record=False).start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
