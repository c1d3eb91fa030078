"""Fixtures shared by the whole suite.

- ``db_url``: every test using it runs twice, on SQLite (id ``sqlite``) and PostgreSQL (id ``pg``).
- ``sqlite_url`` / ``pg_url``: one backend only.
- ``no_network`` (autouse): sockets may only connect to loopback or unix addresses.

PostgreSQL databases are created fresh per test on the server in ``CREWLINE_TEST_PG_URL`` and
dropped afterwards (see ``tests/_pg.py``). ``-m "not pg"`` deselects the PostgreSQL variants.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import _pg


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg: needs the PostgreSQL test server (CREWLINE_TEST_PG_URL)")


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/crewline.db"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="pg", marks=pytest.mark.pg),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database, once per backend."""
    if request.param == "sqlite":
        yield _sqlite_url(tmp_path)
    else:
        with _pg.fresh_database(_pg.server_url()) as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL to an empty SQLite database file in the test's tmp dir."""
    return _sqlite_url(tmp_path)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL database, dropped after the test."""
    with _pg.fresh_database(_pg.server_url()) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pg)


# --- no network ------------------------------------------------------------------------------


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # any other host name
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse socket connections to anything but loopback and unix sockets."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family != getattr(socket, "AF_UNIX", None) and not _is_loopback(address):
            raise RuntimeError(f"tests must not reach the network: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
