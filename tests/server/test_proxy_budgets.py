"""Budgets hold through the proxy against what the provider bills: 200 concurrent calls on a key whose
daily budget holds about 100 never settle above it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import openai
import pytest

from crewline.testing import FakeProvider

from .conftest import Api


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeProvider(api_key="sk-test", latency=0.3) as server:
        yield server


async def burst(api: Api, key: str, calls: int) -> list[BaseException | None]:
    client = openai.AsyncOpenAI(api_key=key, base_url=f"{api.url}/v1", max_retries=0, timeout=60)

    async def one(i: int) -> BaseException | None:
        try:
            await client.chat.completions.create(
                model="fast", max_tokens=10, messages=[{"role": "user", "content": f"call {i}"}]
            )
        except openai.APIStatusError as e:
            return e
        return None

    try:
        return await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        await client.close()


def test_200_concurrent_proxy_calls_never_settle_above_the_keys_daily_budget(
    api_factory: Callable[..., Api], fake: FakeProvider
) -> None:
    models = {
        "providers": {"up": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}},
        "aliases": {"fast": "up/gpt-test"},
        "prices": {"up/gpt-test": {"input": 1000.0, "output": 0.0}},  # a call costs its input tokens
        "retry": {"attempts": 1},
        "max_tokens": 10,
    }
    api = api_factory({"models": models}, workers=0)
    # "call 123" is 8 bytes; the provider bills 20 input tokens ($0.02), as chat formats bill overheads.
    fake.reply("ok", input_tokens=20, output_tokens=1, times=200)
    key = api.key("proxy", budget_per_day=2.0)  # holds 100 calls
    outcomes = asyncio.run(burst(api, key, 200))
    refused = [e for e in outcomes if e is not None]
    assert all(isinstance(e, openai.RateLimitError) and "budget" in e.message for e in refused), refused[:3]
    budgets = api.http.get("/api/v1/budgets").json()
    key_id = key.split("_")[1]
    used = [b for b in budgets if b["scope"].startswith(f"key:{key_id}")]
    assert len(used) == 1, budgets
    spent = used[0]["spent"]
    done = 200 - len(refused)
    assert spent <= 2.0 + 1e-9, f"settled ${spent:.3f} against a $2.00 budget"
    assert spent == pytest.approx(done * 0.02) and done >= 50
