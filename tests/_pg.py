"""Throwaway PostgreSQL databases for tests, on the server named by ``CREWLINE_TEST_PG_URL``.

``scripts/test`` starts that server (``scripts/pg start``) and sets the variable; without it the
PostgreSQL variants of tests are skipped, or fail when ``CI`` or ``CREWLINE_REQUIRE_PG=1`` is set.
"""

from __future__ import annotations

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
