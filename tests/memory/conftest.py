"""Fixtures for the memory tests: a migrated database on SQLite and on PostgreSQL, and a store on it.

PostgreSQL comes from the suite's ``pg_url`` fixture when tests/conftest.py provides one, else from
``CREWLINE_TEST_PG_URL`` (a fresh database per test); without either, the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from crewline.memory import LocalEmbedder, MemoryStore
from crewline.store import Database, open_database

_EMBEDDER = LocalEmbedder()  # loading the model takes seconds: once per test session


def _fresh_pg_database(base: str) -> Iterator[str]:
    import psycopg

    name = f"mem_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def memory_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/memory.db"
        return
    try:
        yield request.getfixturevalue("pg_url")
        return
    except pytest.FixtureLookupError:
        pass
    base = os.environ.get("CREWLINE_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL: run scripts/pg start and export CREWLINE_TEST_PG_URL")
    yield from _fresh_pg_database(base)


@pytest.fixture
def db(memory_url: str) -> Iterator[Database]:
    database = open_database(memory_url)
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
