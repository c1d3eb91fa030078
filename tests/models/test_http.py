"""The gateway's HTTP client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crewline.models.http import HttpClient, HttpError, HttpTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    url: str = ""
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    server.requests.append(head + body)
    return body


@asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        try:
            await handler(reader, writer, server)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            server.open_now -= 1
            writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()


def reply(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while (body := await read_request(reader, server)) is not None:
        writer.write(reply(b'{"echo":' + json.dumps(body.decode()).encode() + b"}"))
        await writer.drain()


async def test_connections_are_kept_alive_and_reused() -> None:
    async with serve(echo_forever) as server:
        client = HttpClient()
        for i in range(20):
            got = await client.request("POST", server.url + "/v1/x", body=f"call {i}".encode())
            assert got.status == 200 and json.loads(got.content) == {"echo": f"call {i}"}
        await client.aclose()
    assert server.connections == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /v1/x HTTP/1.1\r\n") and f"host: {server.url[7:]}" in head


async def test_chunked_stream_lines_split_anywhere_including_inside_crlf() -> None:
    pieces = [b"data: one\r", b"\n\r\nda", b"ta: t", b"wo\n", b"\n", b"data: th\xc3", b"\xa9ree\r\rlast"]

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
        )
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await echo_forever(reader, writer, server)

    async with serve(chunked) as server:
        client = HttpClient()
        async with client.stream("POST", server.url + "/s", body=b"{}") as got:
            assert got.headers["content-type"] == "text/event-stream"
            lines = [line async for line in got.iter_lines()]
        assert lines == ["data: one", "", "data: two", "", "data: théree", "", "last"]
        # The connection went back to the pool once the chunked body ended.
        assert (await client.request("GET", server.url + "/after")).status == 200
        await client.aclose()
    assert server.connections == 1


async def test_gzip_replies_are_decoded() -> None:
    payload = json.dumps({"text": "x" * 5000}).encode()

    async def zipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(reply(gzip.compress(payload), extra="content-encoding: gzip\r\n"))

    async with serve(zipped) as server:
        client = HttpClient()
        got = await client.request("GET", server.url + "/")
        await client.aclose()
    assert got.content == payload
    assert b"accept-encoding: gzip" in server.requests[0]


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(reply(b"ok"))
        await writer.drain()  # then closes: an idle keep-alive timeout on the server's side

    async with serve(once) as server:
        client = HttpClient()
        assert (await client.request("GET", server.url + "/")).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await client.request("GET", server.url + "/")).content == b"ok"
        await client.aclose()
    assert server.connections == 2


async def test_connection_close_replies_are_not_pooled_and_eof_delimits_a_body() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")

    async with serve(closing) as server:
        client = HttpClient()
        for _ in range(3):
            assert (await client.request("GET", server.url + "/")).content == b"until the end"
        await client.aclose()
    assert server.connections == 3


async def test_a_reply_cut_off_midway_is_a_transport_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":')

    async with serve(cut) as server:
        client = HttpClient()
        with pytest.raises(HttpError, match="closed the connection while sending the reply"):
            await client.request("GET", server.url + "/")
        await client.aclose()


async def test_a_stalled_server_times_out_and_a_slow_stream_does_not() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        if len(server.requests) == 1:
            await asyncio.sleep(5)
            return
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, every gap well under the 0.3 s timeout
            writer.write(b"2\r\nx\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    async with serve(stall) as server:
        client = HttpClient()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(HttpTimeout, match=r"no reply within 0\.3s"):
            await client.request("GET", server.url + "/", timeout=0.3)
        assert loop.time() - start < 3
        async with client.stream("GET", server.url + "/", timeout=0.3) as got:
            assert [line async for line in got.iter_lines()] == ["x"] * 6
        await client.aclose()


async def test_the_pool_bound_queues_requests_beyond_it() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server) is not None:
            await asyncio.sleep(0.05)
            writer.write(reply(b"ok"))
            await writer.drain()

    async with serve(slow) as server:
        client = HttpClient(max_connections=2)
        got = await asyncio.gather(*[client.request("GET", server.url + "/") for _ in range(8)])
        await client.aclose()
    assert [r.content for r in got] == [b"ok"] * 8
    assert server.most_open <= 2 and len(server.requests) == 8


async def test_a_request_cancelled_midway_frees_its_connection() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        if len(server.requests) == 1:
            await asyncio.sleep(5)
        else:
            writer.write(reply(b"ok"))

    async with serve(hang) as server:
        client = HttpClient(max_connections=1)
        task = asyncio.create_task(client.request("GET", server.url + "/"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The only slot was released: the next request gets a fresh connection at once.
        assert (await client.request("GET", server.url + "/", timeout=2)).content == b"ok"
        await client.aclose()
    assert server.connections == 2


async def test_a_request_dropped_unanswered_on_a_long_idle_connection_is_sent_again() -> None:
    async def drop_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server) is not None:
            if len(server.requests) == 2:
                return  # closes without a byte of reply, as a server timing out an idle connection does
            writer.write(reply(b"ok"))
            await writer.drain()

    async with serve(drop_second) as server:
        client = HttpClient()
        await client.request("GET", server.url + "/")
        client._pools[("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1]))].idle[0].idle_since -= 1
        assert (await client.request("GET", server.url + "/")).content == b"ok"
        await client.aclose()
    assert server.connections == 2 and len(server.requests) == 3


async def test_connection_refused_is_a_clear_transport_error() -> None:
    async with serve(echo_forever) as server:
        url = server.url
    client = HttpClient()
    with pytest.raises(HttpError, match=r"cannot connect to 127\.0\.0\.1"):
        await client.request("GET", url + "/")
    await client.aclose()


async def test_origins_behind_an_http_proxy_go_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server) is not None:
            writer.write(reply(b"via proxy"))
            await writer.drain()

    async with serve(proxy) as server:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = HttpClient()
        got = await client.request("POST", "http://provider.invalid/v1/chat", body=b"{}")
        await client.aclose()
    assert got.content == b"via proxy"
    assert server.requests[0].startswith(b"POST http://provider.invalid/v1/chat HTTP/1.1")


async def test_headers_http_cannot_carry_are_refused() -> None:
    client = HttpClient()
    with pytest.raises(HttpError, match="line break"):
        await client.request("GET", "http://127.0.0.1:9/", headers={"x-bad": "a\r\nb"})
    with pytest.raises(HttpError, match="character HTTP cannot carry: '€'"):
        await client.request("GET", "http://127.0.0.1:9/", headers={"x-bad": "5€"})
    await client.aclose()


def test_the_client_runs_on_uvloop() -> None:
    # `crewline serve` runs on uvloop, whose transports are not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> bytes:
        async with serve(echo_forever) as server:
            client = HttpClient()
            first = await client.request("POST", server.url + "/", body=b"a")
            second = await client.request("POST", server.url + "/", body=b"b")
            await client.aclose()
        assert server.connections == 1
        return first.content + second.content

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == b'{"echo":"a"}{"echo":"b"}'


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A throwaway self-signed certificate (and key) for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing: scripts/setup installs it")
    pem = tmp_path / "loopback.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(pem),
            "-out",
            str(pem),
        ],
        check=True,
        capture_output=True,
    )
    return pem


async def test_https_checks_the_certificate_and_keeps_the_connection(
    certificate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate)
    async with serve(echo_forever, tls) as server:
        untrusting = HttpClient()
        with pytest.raises(HttpError, match="certificate verify failed"):
            await untrusting.request("POST", server.url + "/", body=b"x")
        await untrusting.aclose()
        # SSL_CERT_FILE is how an operator adds a private CA; the client uses the default trust store.
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        client = HttpClient()
        for word in ("a", "b", "c"):
            got = await client.request("POST", server.url + "/", body=word.encode())
            assert json.loads(got.content) == {"echo": word}
        await client.aclose()
    assert client.opened == 1


async def test_waiting_for_a_free_connection_times_out() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await asyncio.sleep(5)

    async with serve(hang) as server:
        client = HttpClient(max_connections=1)
        first = asyncio.create_task(client.request("GET", server.url + "/", timeout=5))
        await asyncio.sleep(0.05)
        with pytest.raises(HttpTimeout, match=r"no free connection to 127\.0\.0\.1 within 0\.2s"):
            await client.request("GET", server.url + "/", timeout=0.2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await client.aclose()
