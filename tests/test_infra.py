"""The shared fixtures themselves: database URLs and the network guard."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from tests import _pg


def test_sqlite_url_is_a_file_in_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url.startswith("sqlite:///")
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    assert path.parent == tmp_path
    assert not path.exists()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    assert path.is_file()


def test_db_url_names_an_empty_database(db_url: str) -> None:
    if db_url.startswith("sqlite:///"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()
        return
    import psycopg

    assert db_url.startswith("postgresql://")
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')"
        ).fetchone()
    assert row is not None
    name, tables = row
    assert db_url.endswith("/" + name) and name.startswith("t_")
    assert tables == 0


def test_pg_database_is_created_and_dropped() -> None:
    server = _pg.server_url()
    with _pg.fresh_database(server) as url:
        name = url.rsplit("/", 1)[1]
        assert _pg.database_exists(server, name)
        import psycopg

        # an open connection does not stop the drop (WITH (FORCE))
        conn = psycopg.connect(url)
        conn.execute("SELECT 1")
    assert not _pg.database_exists(server, name)
    conn.close()


def test_two_pg_urls_are_different_databases(pg_url: str) -> None:
    with _pg.fresh_database(_pg.server_url()) as other:
        assert other != pg_url


def test_network_guard_refuses_remote_addresses() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match=r"tests must not reach the network: .*10\.0\.0\.1"):
            sock.connect(("10.0.0.1", 80))
        with pytest.raises(RuntimeError, match="tests must not reach the network"):
            sock.connect_ex(("10.0.0.1", 80))
        with pytest.raises(RuntimeError, match="tests must not reach the network"):
            sock.connect(("example.com", 443))
    with pytest.raises(RuntimeError, match="tests must not reach the network"):
        socket.create_connection(("10.0.0.1", 80), timeout=1)


def test_network_guard_allows_loopback(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=5) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"ping")
                    assert peer.recv(4) == b"ping"

    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix_server:
        unix_server.bind(path)
        unix_server.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            unix_server.accept()[0].close()
