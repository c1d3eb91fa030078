"""Prices (shipped table, overrides, unknown never $0), the exact-match cache, and call records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crewline.errors import ConfigError, RateLimited
from crewline.models import Price, Usage, shipped_table
from crewline.store import Database
from crewline.testing import FakeProvider, Fault


def test_shipped_table_is_versioned_and_complete() -> None:
    table = shipped_table()
    assert table.version and len(table) > 20
    for key in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"):
        assert table.lookup(*key.split("/", 1)) is not None


def test_lookup_snapshot_wildcard_and_override() -> None:
    table = shipped_table({"openai/gpt-4o-mini": {"input": 9, "output": 9}})
    assert table.lookup("openai", "gpt-4o-mini-2024-07-18") == table.lookup("openai", "gpt-4o-mini")
    assert table.lookup("openai", "gpt-4o-mini").input == 9  # type: ignore[union-attr]
    assert table.lookup("openai", "gpt-4o").input == 2.5  # type: ignore[union-attr]  # not confused with -mini
    assert table.lookup("ollama", "llama3").input == 0  # type: ignore[union-attr]
    assert table.lookup("openai", "gpt-unknown") is None
    assert table.version.endswith("+config")


def test_cost_counts_cache_and_reasoning_at_their_rates() -> None:
    price = Price(input=2.0, output=10.0, cache_read=0.5, cache_write=2.5, reasoning=20.0)
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=500_000,
        cache_read_tokens=400_000,
        cache_write_tokens=100_000,
        reasoning_tokens=100_000,
    )
    assert price.cost(usage) == pytest.approx(0.5 * 2 + 0.4 * 0.5 + 0.1 * 2.5 + 0.4 * 10 + 0.1 * 20)
    assert price.worst_case(1000, 1000) == pytest.approx((1000 * 2.5 + 1000 * 20) / 1e6)


async def test_unknown_price_is_flagged_not_zero(
    fake: FakeProvider, make_gateway: Any, sqlite_db: Database
) -> None:
    gw = make_gateway(db=sqlite_db, wait_for_records=True)
    reply = await gw.complete("openai/brand-new-model", "hi")
    assert reply.price_known is False
    row = sqlite_db.query(lambda c: c.one("SELECT price_known FROM model_calls"))
    assert row == (0,)


async def test_strict_prices_refuse_before_sending(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"strict_prices": True})
    with pytest.raises(ConfigError, match=r'models\.prices\."openai/brand-new-model"'):
        await gw.complete("openai/brand-new-model", "hi")
    assert fake.requests == []
    assert (await gw.complete("ollama/llama3", "hi")).price_known  # self-hosted: a known $0


async def test_a_call_that_cannot_be_priced_never_passes_a_limited_budget(
    fake: FakeProvider, make_gateway: Any, db: Database
) -> None:
    gw = make_gateway({"budgets": {"day": 1.0}}, db=db, wait_for_records=True)  # the global day budget
    with pytest.raises(ConfigError, match=r'no known price.*models\.prices\."openai/brand-new-model"'):
        await gw.complete("openai/brand-new-model", "hi", max_tokens=100_000)
    with pytest.raises(ConfigError, match="no known price"):
        await gw.stream("openai/brand-new-model", "hi").text()
    with pytest.raises(ConfigError, match="no known price"):
        await gw.embed("hi", "openai/brand-new-embedder")
    assert fake.requests == []
    assert (await gw.complete("ollama/llama3", "hi")).price_known  # self-hosted: a known $0, allowed

    keyed = make_gateway(db=db, wait_for_records=True)  # no global budget; a stored limit on one key
    keyed.ledger.set_limit("key:alice", 5.0)
    with pytest.raises(ConfigError, match="no known price"):
        await keyed.complete("openai/brand-new-model", "hi", budget_scope={"key": "alice"})
    assert fake.requests[1:] == []
    unlimited = await keyed.complete("openai/brand-new-model", "hi", budget_scope={"key": "bob"})
    assert unlimited.price_known is False  # no limit in scope: allowed, flagged as unpriced


async def test_cache_hits_cost_nothing_and_are_recorded(
    fake: FakeProvider, make_gateway: Any, db: Database
) -> None:
    gw = make_gateway({"prices": {"openai/m": {"input": 1, "output": 1}}}, db=db, wait_for_records=True)
    first = await gw.complete("openai/m", "same question", temperature=0)
    second = await gw.complete("openai/m", "same question", temperature=0)
    assert len(fake.requests) == 1
    assert second.cached and second.cost == 0 and second.text == first.text and not first.cached
    await gw.complete("openai/m", "same question", temperature=0.7)  # not deterministic: not cached
    await gw.complete("openai/m", "same question", temperature=0, max_tokens=5)  # different request
    await gw.complete("openai/m", "same question", temperature=0, cache=False)
    assert len(fake.requests) == 4
    await gw.complete("openai/m", "opt in", temperature=0.7, cache=True)
    await gw.complete("openai/m", "opt in", temperature=0.7, cache=True)
    assert len(fake.requests) == 5
    rows = db.query(lambda c: c.all("SELECT cache_hit, cost FROM model_calls ORDER BY id"))
    assert [r[0] for r in rows] == [0, 1, 0, 0, 0, 0, 1] and rows[1][1] == 0
    assert db.query(lambda c: c.scalar("SELECT SUM(hits) FROM model_cache")) == 2


async def test_cache_expires(fake: FakeProvider, make_gateway: Any, sqlite_db: Database) -> None:
    now = [1000.0]
    gw = make_gateway({"cache": {"ttl": "1m"}}, db=sqlite_db, wait_for_records=True, clock=lambda: now[0])
    await gw.complete("openai/m", "q", temperature=0)
    now[0] += 61
    await gw.complete("openai/m", "q", temperature=0)
    assert len(fake.requests) == 2
    assert gw.cache.prune() == 0  # the entry was just refreshed


async def test_every_call_is_recorded(fake: FakeProvider, make_gateway: Any, db: Database) -> None:
    gw = make_gateway(
        {
            "prices": {"openai/m": {"input": 1, "output": 1}},
            "retry": {"attempts": 2},
            "payload_threshold": 64,
        },
        db=db,
    )
    fake.fault(Fault.http(500, "flaky"))
    await gw.complete(
        "openai/m", "a question " * 20, budget_scope={"workflow": "triage"}, run_id="run-1", step=3
    )
    await gw.stream("openai/m", "stream it", run_id="run-1", step=4).text()
    await gw.embed(["a", "b"], "openai/emb")
    fake.fault(Fault.rate_limit(retry_after=60))
    with pytest.raises(RateLimited):
        await gw.complete("openai/m", "x")
    await gw.flush()
    rows = db.query(
        lambda c: c.all(
            "SELECT kind, run_id, step, workflow, provider, model, deployment, status, error_class, attempts, "
            "input_tokens > 0, cost > 0, latency_ms > 0, ttft_ms IS NOT NULL, request IS NULL, request_blob IS NULL "
            "FROM model_calls ORDER BY id"
        )
    )
    assert rows[0] == (
        "complete",
        "run-1",
        3,
        "triage",
        "openai",
        "m",
        "openai/m",
        "ok",
        None,
        2,
        1,
        1,
        1,
        0,
        1,
        0,
    )  # big request went to a blob
    assert rows[1][:3] == ("stream", "run-1", 4) and rows[1][13] == 1
    assert rows[2][0] == "embed" and rows[2][7] == "ok"
    assert rows[3][7:10] == ("error", "RateLimited", 1)
    blob = db.query(lambda c: c.scalar("SELECT data FROM blobs"))
    assert "a question" in json.loads(bytes(blob))["messages"][0]["content"]


async def test_old_call_payloads_are_pruned_and_their_blobs_collected(
    fake: FakeProvider, make_gateway: Any, db: Database
) -> None:
    from crewline.models.call_log import prune_payloads
    from crewline.store.retention import prune

    gw = make_gateway({"payload_threshold": 16}, db=db, wait_for_records=True)
    await gw.complete("openai/m", "a long enough question to become a blob")
    assert db.query(lambda c: c.scalar("SELECT COUNT(*) FROM blobs")) >= 1
    assert db.run(lambda c: prune_payloads(c, 3600)) == 0
    assert db.run(lambda c: prune_payloads(c, 0, now=10**10)) == 1
    prune(db, 3600)
    assert db.query(lambda c: c.scalar("SELECT COUNT(*) FROM blobs")) == 0
    assert db.query(lambda c: c.one("SELECT input_tokens > 0, request_blob FROM model_calls")) == (1, None)


async def test_abandoned_stream_keeps_its_worst_case_cost(
    fake: FakeProvider, make_gateway: Any, sqlite_db: Database
) -> None:
    gw = make_gateway(
        {"prices": {"openai/m": {"input": 1000, "output": 1000}}, "budgets": {"workflow": {"w": 10.0}}},
        db=sqlite_db,
        wait_for_records=True,
    )
    fake.reply("many words in this streamed reply " * 5)
    async with gw.stream("openai/m", "go", max_tokens=100, budget_scope={"workflow": "w"}) as stream:
        async for _chunk in stream:
            break
    await gw.flush()
    row = sqlite_db.query(lambda c: c.one("SELECT status, error_class, cost, price_known FROM model_calls"))
    assert row is not None and row[:2] == ("error", "GeneratorExit") and row[2] >= 100 * 1000 / 1e6
    status = gw.ledger.status("workflow:w")
    assert status["reserved"] == 0 and status["spent"] == pytest.approx(row[2])
