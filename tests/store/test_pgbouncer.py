"""PostgreSQL behind a connection pooler in transaction mode: a real PgBouncer (Debian's, 1.18, which
keeps no prepared statements across server connections) in front of the test server.

With one server connection for every client, whatever a client prepares stays on the connection all
the others are given: ``pg_prepared_statements`` read through the pooler shows it, and two clients that
prepare a statement each under the same name collide (psycopg names them by a per-connection count), the
error an engine behind such a pooler used to crash runs with. With ``prepared_statements=off`` nothing is
prepared and the workflows run as they do directly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from crewline import App, Context, Settings
from crewline.errors import ConfigError
from crewline.store.database import Database
from crewline.store.dialects import PostgresDialect
from tests import _pg

PGBOUNCER = "/usr/sbin/pgbouncer"


@pytest.fixture
def pooled_url(pg_url: str) -> Iterator[str]:
    """``pg_url`` through a PgBouncer in transaction mode with one server connection."""
    if not os.path.exists(PGBOUNCER):
        pytest.fail(f"{PGBOUNCER} is missing: scripts/setup installs Debian's pgbouncer", pytrace=False)
    server = urlsplit(pg_url)
    port = _pg.free_port()
    base = Path(tempfile.mkdtemp(prefix="crewline-pgbouncer-"))
    (base / "users.txt").write_text(f'"{server.username}" ""\n')
    (base / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={server.hostname} port={server.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {base}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 1\nmin_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 100\n"
        f"logfile = {base}/pgbouncer.log\nignore_startup_parameters = extra_float_digits\n"
    )
    as_user: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        for path in (base, *base.iterdir()):
            shutil.chown(path, "postgres")
    proc = subprocess.Popen([*as_user, PGBOUNCER, str(base / "pgbouncer.ini")], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (base / "pgbouncer.log").read_text() if (base / "pgbouncer.log").exists() else ""
                    pytest.fail(f"PgBouncer did not start: {log[-2000:]}", pytrace=False)
                time.sleep(0.05)
        yield urlunsplit(server._replace(netloc=f"{server.username}@127.0.0.1:{port}"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


async def _run_workflows(url: str) -> list[str]:
    """Twenty runs of a five-step workflow, ten at a time, through ``url``; the statements then
    prepared on the (one) server connection."""
    app = App(settings=Settings().with_(database_url=url))

    async def add(x: int, y: int) -> int:
        return x + y

    @app.workflow()
    async def total(ctx: Context, n: int) -> int:
        for i in range(5):
            n = await ctx.step(add, n, i)
        return n

    worker = app.worker(concurrency=10)
    task = asyncio.create_task(worker.run())
    try:
        ids = [await app.start(total, n) for n in range(20)]
        results = [await app.result(run_id, timeout=60) for run_id in ids]
        assert results == [n + 10 for n in range(20)]
        worker.stop()
        await task
        return app.db.query(lambda c: [r[0] for r in c.all("SELECT name FROM pg_prepared_statements")])
    finally:
        app.close()


@pytest.mark.pg
async def test_prepared_statements_off_leaves_none_behind_a_transaction_pooler(pooled_url: str) -> None:
    assert await _run_workflows(pooled_url + "?prepared_statements=off") == []


def _same_query_on_two_clients(url: str) -> None:
    """Six runs of one query on each of two clients of the pooler: psycopg prepares a query on its fifth
    run, naming it by its own per-connection count, so both name theirs alike on the one server connection."""
    first, second = Database(url), Database(url)
    try:
        for db in (first, second):
            for _ in range(6):
                assert db.query(
                    lambda c: c.one("SELECT count(*) FROM pg_class WHERE relname = ?", ("x",))
                ) == (0,)
    finally:
        first.close()
        second.close()


@pytest.mark.pg
def test_without_the_setting_clients_of_the_pooler_collide(pooled_url: str) -> None:
    # What the setting prevents, shown so that the test above can be seen to mean something.
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        _same_query_on_two_clients(pooled_url)
    _same_query_on_two_clients(pooled_url + "?prepared_statements=off")


def test_the_setting_is_taken_out_of_the_url_before_libpq_sees_it() -> None:
    dialect = PostgresDialect(
        "postgresql://u@h:5/db?sslmode=disable&prepared_statements=OFF&options=-c%20x%3Dy"
    )
    assert dialect.prepares is False
    assert dialect.url == "postgresql://u@h:5/db?sslmode=disable&options=-c%20x%3Dy"
    assert PostgresDialect("postgresql://u@h/db?prepared_statements=on").prepares is True
    plain = PostgresDialect("postgresql://u@h/db?sslmode=require")
    assert (plain.prepares, plain.url) == (True, "postgresql://u@h/db?sslmode=require")


@pytest.mark.parametrize(
    "query", ["prepared_statements=maybe", "prepared_statements=off&prepared_statements=on"]
)
def test_a_bad_setting_says_what_to_write(query: str) -> None:
    with pytest.raises(ConfigError, match="prepared_statements must be given once, as on or off"):
        Database(f"postgresql://u@127.0.0.1:1/db?{query}")


def test_a_connection_opened_with_the_setting_off_never_prepares(pg_url: str) -> None:
    db = Database(pg_url + "?prepared_statements=off")
    try:
        assert db.query(lambda c: c.raw.prepare_threshold) is None
    finally:
        db.close()
