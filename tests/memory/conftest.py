"""Fixtures for the memory tests: a migrated database (SQLite and PostgreSQL, from the suite's
``db_url``) and a memory store on it with the bundled local embedder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from crewline.memory import LocalEmbedder, MemoryStore
from crewline.store import Database, open_database

_EMBEDDER = LocalEmbedder()  # loading the model takes seconds: once per test session


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@pytest.fixture
def embedder() -> LocalEmbedder:
    return _EMBEDDER


@pytest.fixture
def store(db: Database, embedder: LocalEmbedder) -> MemoryStore:
    return MemoryStore(db, embedder)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[str]:
    """A PostgreSQL server with pgvector of the tests' own (Debian's shared test server has none),
    started once for the session, like the IMAP tests start their own Dovecot."""
    from tests import _pg

    with _pg.own_cluster(_pg.pgvector_bindir()) as cluster:
        yield cluster.url


@pytest.fixture
def pgvector_url(pgvector_server: str) -> Iterator[str]:
    """A fresh database on :func:`pgvector_server`, dropped after the test."""
    from tests import _pg

    with _pg.fresh_database(pgvector_server) as url:
        yield url
