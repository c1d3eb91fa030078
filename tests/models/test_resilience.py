"""Retries honouring retry-after, circuit breakers, fallbacks, balancing and rate limits."""

from __future__ import annotations

from typing import Any

import pytest

from crewline.errors import BadRequest, ProviderUnavailable, RateLimited, UnsupportedOperation
from crewline.models import Gateway, ModelsConfig
from crewline.models.config import BreakerConfig, RetryConfig
from crewline.models.resilience import CircuitBreaker, backoff_delay
from crewline.testing import FakeProvider, Fault, ScriptedModel

from .conftest import Sleeps


async def test_retry_waits_what_retry_after_says(
    fake: FakeProvider, make_gateway: Any, sleeps: Sleeps
) -> None:
    gw = make_gateway({"retry": {"attempts": 3}})
    fake.fault(Fault.rate_limit(retry_after=2, times=2))
    reply = await gw.complete("openai/m", "hi")
    assert reply.attempts == 3 and sleeps.delays == [2.0, 2.0]


async def test_retry_after_longer_than_allowed_moves_to_fallback(
    fake: FakeProvider, make_gateway: Any, sleeps: Sleeps
) -> None:
    gw = make_gateway({"aliases": {"chain": ["openai/m", "anthropic/m"]}, "retry": {"max_retry_after": "5s"}})
    fake.fault(Fault.rate_limit(retry_after=60, path="/chat/completions"))
    reply = await gw.complete("chain", "hi")
    assert reply.provider == "anthropic" and sleeps.delays == []


async def test_backoff_is_jittered_exponential_and_bounded(
    fake: FakeProvider, make_gateway: Any, sleeps: Sleeps
) -> None:
    gw = make_gateway({"retry": {"attempts": 4, "base_delay": "100ms", "max_delay": "250ms"}})
    fake.fault(Fault.http(503, "busy", times=3))
    await gw.complete("openai/m", "hi")
    assert len(sleeps.delays) == 3
    for n, delay in enumerate(sleeps.delays, 1):
        ceiling = min(0.25, 0.1 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_delay_function() -> None:
    retry = RetryConfig(attempts=5, base_delay=1.0, max_delay=4.0, max_retry_after=10.0)
    assert backoff_delay(retry, 1, None, lambda: 1.0) == 1.0
    assert backoff_delay(retry, 3, None, lambda: 0.0) == 2.0
    assert backoff_delay(retry, 9, None, lambda: 1.0) == 4.0
    assert backoff_delay(retry, 1, 7.0) == 7.0
    assert backoff_delay(retry, 1, 11.0) is None


async def test_exhausted_retries_raise_the_last_error(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"retry": {"attempts": 2}})
    fake.fault(Fault.http(500, "still down", times=5))
    with pytest.raises(ProviderUnavailable, match="still down"):
        await gw.complete("openai/m", "hi")


async def test_bad_request_is_not_retried_nor_falls_back(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"aliases": {"chain": ["openai/m", "anthropic/m"]}})
    fake.fault(Fault.http(400, "unknown field"))
    with pytest.raises(BadRequest):
        await gw.complete("chain", "hi")
    assert len(fake.requests) == 1


async def test_context_too_long_falls_back_to_a_bigger_model(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"aliases": {"chain": ["openai/small", "openai/big"]}})
    fake.fault(Fault.http(400, "maximum context length is 10 tokens"))
    reply = await gw.complete("chain", "hi")
    assert reply.deployment == "openai/big"


def test_breaker_opens_on_error_ratio_then_probes() -> None:
    now = [0.0]
    b = CircuitBreaker(BreakerConfig(window=4, min_calls=4, error_ratio=0.5, cooldown=10), lambda: now[0])
    for ok in (True, False, True):
        b.record(ok)
    assert b.state == "closed"
    b.record(False)
    assert b.state == "open" and not b.allow()
    now[0] = 10.0
    assert b.allow() and not b.allow()  # one probe at a time
    b.record(False)
    assert b.state == "open"
    now[0] = 20.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.allow()


async def test_open_breaker_skips_the_deployment(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "aliases": {"chain": ["openai/m", "anthropic/m"]},
            "retry": {"attempts": 1},
            "breaker": {"window": 2, "min_calls": 2, "error_ratio": 1.0, "cooldown": "1h"},
        }
    )
    fake.fault(Fault.http(503, "down", path="/chat/completions", times=2))
    for _ in range(2):
        assert (await gw.complete("chain", "hi")).provider == "anthropic"
    fake.reset()
    assert (await gw.complete("chain", "hi")).provider == "anthropic"
    assert all(r.format == "anthropic" for r in fake.requests)  # the open breaker kept openai out


async def test_balanced_deployments_share_load_by_weight(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "deployments": {
                "east": {"provider": "openai", "model": "gpt-east", "weight": 3},
                "west": {"provider": "anthropic", "model": "claude-west", "weight": 1},
            },
            "aliases": {"pool": {"balance": ["east", "west"]}},
        }
    )
    served = [(await gw.complete("pool", "hi")).deployment for _ in range(80)]
    assert 40 <= served.count("east") <= 75 and served.count("west") >= 5


async def test_balancing_routes_around_a_rate_limited_deployment(
    fake: FakeProvider, make_gateway: Any, sleeps: Sleeps
) -> None:
    gw = make_gateway(
        {
            "deployments": {
                "a": {"provider": "openai", "model": "m"},
                "b": {"provider": "anthropic", "model": "m"},
            },
            "aliases": {"pool": {"balance": ["a", "b"]}},
        }
    )
    fake.fault(Fault.rate_limit(retry_after=30, path="/chat/completions", times=100))
    results = [(await gw.complete("pool", "hi")).deployment for _ in range(5)]
    assert results[1:] == ["b"] * 4  # a is cooling down after its 429
    assert sleeps.delays in ([], [30.0])


async def test_rpm_limit_admits_then_spills_over(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "deployments": {
                "tight": {"provider": "openai", "model": "m", "rpm": 2, "weight": 1000},
                "spare": {"provider": "ollama", "model": "m"},
            },
            "aliases": {"pool": {"balance": ["tight", "spare"]}},
        }
    )
    served = [(await gw.complete("pool", "hi")).deployment for _ in range(12)]
    assert served.count("tight") == 2


async def test_rpm_limit_with_one_deployment_waits_or_refuses(
    fake: FakeProvider, make_gateway: Any, sleeps: Sleeps
) -> None:
    gw = make_gateway(
        {
            "deployments": {"only": {"provider": "openai", "model": "m", "rpm": 1}},
            "retry": {"max_retry_after": "1s"},
        }
    )
    await gw.complete("only", "hi")
    with pytest.raises(RateLimited, match="rpm/tpm"):
        await gw.complete("only", "hi")


async def test_tpm_limit_counts_tokens(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "deployments": {"d": {"provider": "openai", "model": "m", "tpm": 3000}},
            "retry": {"max_retry_after": "1s"},
        }
    )
    await gw.complete("d", "hi", max_tokens=2000)
    with pytest.raises(RateLimited):
        await gw.complete("d", "hi", max_tokens=2000)


async def test_shared_limits_hold_across_gateways_on_postgres(pg_url: str) -> None:
    from crewline.store import open_database

    db = open_database(pg_url)
    config = ModelsConfig.parse(
        {
            "deployments": {"d": {"provider": "test", "model": "m", "rpm": 3}},
            "retry": {"max_retry_after": "1s"},
        }
    )
    # a fixed clock keeps every call in one rate window however slow the machine
    gateways = [
        Gateway(config, db, adapters={"test": ScriptedModel(default="ok")}, clock=lambda: 6000.0)
        for _ in range(2)
    ]
    ok = refused = 0
    for i in range(6):
        try:
            await gateways[i % 2].complete("d", "hi")
            ok += 1
        except RateLimited:
            refused += 1
    assert (ok, refused) == (3, 3)
    for gw in gateways:
        await gw.aclose()
    db.close()


def test_half_open_probe_that_never_reports_frees_its_slot() -> None:
    now = [0.0]
    b = CircuitBreaker(BreakerConfig(window=2, min_calls=2, error_ratio=1.0, cooldown=10), lambda: now[0])
    b.record(False)
    b.record(False)
    now[0] = 10.0
    assert b.allow() and not b.allow()  # the probe went out and was lost (e.g. cancelled)
    now[0] = 20.0
    assert b.allow()


async def test_shared_limits_lease_slices_and_never_exceed_the_window(pg_url: str) -> None:
    from crewline.store import open_database

    db = open_database(pg_url)
    config = ModelsConfig.parse(
        {
            "deployments": {"d": {"provider": "test", "model": "m", "rpm": 100}},
            "retry": {"max_retry_after": "1s"},
        }
    )
    gateways = [
        Gateway(config, db, adapters={"test": ScriptedModel(default="ok")}, clock=lambda: 6000.0)
        for _ in range(3)
    ]
    ok = 0
    for i in range(130):
        try:
            await gateways[i % 3].complete("d", "hi")
            ok += 1
        except RateLimited:
            pass
    assert ok <= 100 and ok >= 100 - 2 * 5  # at most a slice per other process left unspent
    taken = db.query(lambda c: c.scalar("SELECT requests FROM model_rate_windows WHERE deployment = 'd'"))
    assert taken == 100
    for gw in gateways:
        await gw.aclose()
    db.close()


async def test_status_and_call_observer(fake: FakeProvider, make_gateway: Any) -> None:
    seen: list[Any] = []

    def broken(record: Any) -> None:
        seen.append(record)
        raise RuntimeError("observer bug")

    gw = make_gateway(
        {"retry": {"attempts": 1}, "breaker": {"window": 1, "min_calls": 1, "cooldown": "1h"}}, on_call=broken
    )
    fake.fault(Fault.http(503, "down"))
    with pytest.raises(ProviderUnavailable):
        await gw.complete("openai/m", "hi")
    await gw.complete("anthropic/m", "hi")
    assert [(r.status, r.error_class) for r in seen] == [("error", "ProviderUnavailable"), ("ok", None)]
    states = {s["deployment"]: s["breaker"] for s in gw.status()}
    assert states == {"openai/m": "open", "anthropic/m": "closed"}


LLAMA_NO_EMBEDDINGS = "Llama model must be created with embedding=True to call this method"


@pytest.mark.parametrize(
    ("status", "message"), [(500, LLAMA_NO_EMBEDDINGS), (501, "This server does not support embeddings")]
)
async def test_an_unsupported_operation_neither_retries_nor_opens_the_breaker(
    fake: FakeProvider, make_gateway: Any, status: int, message: str
) -> None:
    gw = make_gateway({"breaker": {"window": 2, "min_calls": 2, "error_ratio": 0.5, "cooldown": "1h"}})
    fake.fault(Fault.http(status, message, path="/embeddings", times=10))
    for _ in range(3):
        with pytest.raises(UnsupportedOperation, match="embedding"):
            await gw.embed("hello", "openai/m")
    assert len(fake.requests) == 3  # one request per call: asking again would not help
    assert (await gw.complete("openai/m", "hi")).provider == "openai"
    assert {d["breaker"] for d in gw.status()} == {"closed"}
