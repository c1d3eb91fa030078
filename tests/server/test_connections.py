"""Connection limits against a real server, over raw sockets: header size and count (431), the header read
timeout (408 or a close), connections per client address (429), on both HTTP parsers and both event loops,
for the API and the proxy's fast path; well-behaved requests and keep-alive unaffected."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewline.errors import ConfigError
from crewline.server import ServerConfig

from .conftest import cli_env, crewline, make_app, serving

Serve = Callable[..., str]
HEAD = b"GET /healthz HTTP/1.1\r\nHost: test\r\n"


@pytest.fixture(params=["httptools-uvloop", "httptools-asyncio", "h11-uvloop", "h11-asyncio"])
def serve(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> Iterator[Serve]:
    """Start a server with ``[server]`` settings on one HTTP parser and event loop; yields its base URL."""
    http, loop = request.param.split("-")
    with ExitStack() as stack:

        def start(**server: Any) -> str:
            app = make_app(sqlite_url, tmp_path, {"server": server})
            config = ServerConfig.from_settings(app.settings)
            return stack.enter_context(serving(app, config, workers=0, http=http, loop=loop))

        yield start


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def connect(url: str, source: str = "127.0.0.1") -> Iterator[socket.socket]:
    sock = socket.create_connection(address(url), timeout=30, source_address=(source, 0))
    try:
        yield sock
    finally:
        sock.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a kept-alive connection (its status and body; bodies here have a length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length: (\d+)", head)
    length = int(found.group(1)) if found else 0
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def status_of(answer: bytes) -> int:
    return int(answer.split()[1])


@pytest.mark.parametrize("path", ["/healthz", "/v1/chat/completions"])
def test_an_oversized_header_block_gets_431_and_the_connection_closed(serve: Serve, path: str) -> None:
    url = serve(max_header_size="8KB")
    with connect(url) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nX-Big: ".encode() + b"a" * 20_000)
        answer = read_all(sock)
    assert status_of(answer) == 431
    assert b"header" in answer.partition(b"\r\n\r\n")[2].lower()
    # The server is unharmed: the next client is served.
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_huge_header_is_cut_off_while_it_is_still_arriving(serve: Serve) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(HEAD + b"X-Big: ")
        sent = 0
        with pytest.raises(OSError):  # the server closes long before 64 MB have gone out
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
    assert sent < 64 * 1024 * 1024


def test_too_many_headers_get_431(serve: Serve) -> None:
    url = serve()
    many = b"".join(b"X-N%d: v\r\n" % i for i in range(150))
    with connect(url) as sock:
        sock.sendall(HEAD + many + b"\r\n")
        answer = read_all(sock)
    assert status_of(answer) == 431
    assert b"100" in answer  # the limit is named, so the client knows what to do
    few = b"".join(b"X-N%d: v\r\n" % i for i in range(99))  # and Host: 100 in all
    with connect(url) as sock:
        sock.sendall(HEAD + few + b"\r\n")
        assert read_response(sock)[0] == 200


def test_a_half_sent_header_block_is_closed_after_the_timeout(serve: Serve) -> None:
    url = serve(header_timeout="300ms")
    with connect(url) as slow, connect(url) as silent:
        slow.sendall(HEAD + b"X-Slow: 1\r\n")
        answer = read_all(slow)  # returns only once the server has closed the connection
        assert read_all(silent) == b""  # a connection that never sends anything is closed too
    assert status_of(answer) == 408


def test_connections_per_client_address_are_capped(serve: Serve) -> None:
    url = serve(max_connections_per_client=3)
    with ExitStack() as stack:
        held = [stack.enter_context(connect(url, source="127.0.0.2")) for _ in range(3)]
        with connect(url, source="127.0.0.2") as extra:
            extra.sendall(HEAD + b"\r\n")
            answer = read_all(extra)
        assert status_of(answer) == 429
        # The held connections are served, and so is another address.
        held[0].sendall(HEAD + b"\r\n")
        assert read_response(held[0])[0] == 200
        assert httpx.get(f"{url}/healthz").status_code == 200
        # Closing one frees its place.
        held[1].sendall(HEAD + b"Connection: close\r\n\r\n")
        read_all(held[1])
        assert _eventually_served(url, "127.0.0.2")


def _eventually_served(url: str, source: str) -> bool:
    """The server counts a connection as gone once it has seen it close, which may lag the client."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connect(url, source=source) as sock:
            sock.sendall(HEAD + b"Connection: close\r\n\r\n")
            if status_of(read_all(sock)) == 200:
                return True
        time.sleep(0.05)
    return False


def test_keep_alive_split_header_blocks_and_large_bodies_still_work(serve: Serve) -> None:
    url = serve(max_header_size="4KB")
    body = b"x" * 50_000  # far larger than the header limit: a body is not a header
    post = b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
    with connect(url) as sock:
        for _ in range(3):
            sock.sendall(HEAD + b"\r\n")
            assert read_response(sock)[0] == 200
        # A header block sent in small pieces, its blank line split across them, is one request.
        for piece in (HEAD[:10], HEAD[10:] + b"X-A: 1\r", b"\n\r", b"\n"):
            sock.sendall(piece)
            time.sleep(0.01)
        assert read_response(sock)[0] == 200
        # Last: uvicorn closes a connection whose request body the application answered without reading.
        sock.sendall(post + body)
        assert read_response(sock)[0] == 405


def test_a_request_is_served_while_many_half_open_ones_are_held(serve: Serve) -> None:
    url = serve(max_connections_per_client=500)
    with ExitStack() as stack:
        for _ in range(200):
            stack.enter_context(connect(url)).sendall(HEAD + b"X-Slow: 1\r\n")
        assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ({"max_header_size": "huge"}, "max_header_size"),
        ({"max_headers": 0}, "max_headers must be a whole number from 1"),
        ({"max_headers": "100"}, "max_headers must be a whole number from 1"),
        ({"header_timeout": "0s"}, "header_timeout must be more than 0"),
        ({"max_connections_per_client": True}, "max_connections_per_client must be a whole number"),
    ],
)
def test_bad_connection_settings_are_refused_at_start(
    setting: dict[str, Any], words: str, tmp_path: Path
) -> None:
    app = make_app(f"sqlite:///{tmp_path}/x.db", tmp_path, {"server": setting})
    with pytest.raises(ConfigError, match=words):
        ServerConfig.from_settings(app.settings)


def test_crewline_serve_enforces_the_limits_from_crewline_toml(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text("[server]\nmax_headers = 5\n")
    args = ("serve", "--port", "0", "--no-workers", "--loop", "asyncio")
    proc = crewline(*args, env=cli_env(sqlite_url), cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if found := re.search(r"listening on (http://\S+)", line):
                break
        else:
            raise AssertionError("crewline serve did not start")
        with connect(found.group(1)) as sock:
            sock.sendall(HEAD + b"".join(b"X-N%d: v\r\n" % i for i in range(6)) + b"\r\n")
            assert status_of(read_all(sock)) == 431
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
