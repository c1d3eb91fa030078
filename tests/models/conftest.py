"""Fixtures for the gateway tests: a fake provider server and gateways configured against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from crewline.models import Gateway, ModelsConfig
from crewline.store import Database, open_database
from crewline.testing import FakeProvider

FORMATS = ("openai", "anthropic", "gemini", "ollama", "responses")
ENV = {"FAKE_KEY": "sk-test"}


def provider_tables(url: str) -> dict[str, Any]:
    """One provider per wire format, all pointing at the fake server."""
    return {
        "openai": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"},
        "anthropic": {"format": "anthropic", "base_url": url, "api_key_env": "FAKE_KEY"},
        "gemini": {"format": "gemini", "base_url": url + "/v1beta", "api_key_env": "FAKE_KEY"},
        "ollama": {"format": "ollama", "base_url": url, "api_key_env": "FAKE_KEY"},
        "responses": {"format": "openai-responses", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"},
    }


class Sleeps:
    """A stand-in for asyncio.sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class GatewayMaker:
    """``make_gateway(models_table, db=None, **kwargs)``: a gateway over the fake server."""

    def __init__(self, fake: FakeProvider, sleeps: Sleeps) -> None:
        self.fake = fake
        self.sleeps = sleeps
        self.made: list[Gateway] = []

    def __call__(
        self, table: dict[str, Any] | None = None, db: Database | None = None, **kwargs: Any
    ) -> Gateway:
        raw = dict(table or {})
        raw["providers"] = {**provider_tables(self.fake.url), **raw.get("providers", {})}
        raw.setdefault("retry", {"base_delay": "10ms"})
        kwargs.setdefault("environ", ENV)
        kwargs.setdefault("sleep", self.sleeps)
        gw = Gateway(ModelsConfig.parse(raw), db, **kwargs)
        self.made.append(gw)
        return gw


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_gateway(fake: FakeProvider, sleeps: Sleeps) -> AsyncIterator[GatewayMaker]:
    """Gateways over the fake, closed in the test's own event loop (pytest-asyncio, auto mode)."""
    maker = GatewayMaker(fake, sleeps)
    yield maker
    for gw in maker.made:
        await gw.aclose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = open_database(sqlite_url)
    yield database
    database.close()
