"""Budget credit leased to a process: budgeted calls without a reservation write each, and still no
budget overspent across processes (two gateways on one database stand for two processes)."""

from __future__ import annotations

import asyncio

import pytest

from crewline.errors import BudgetExceeded
from crewline.models import Gateway, ModelsConfig
from crewline.models.config import BudgetConfig
from crewline.models.credit import LEASE_CALLS
from crewline.models.ledger import Ledger
from crewline.store import Database
from crewline.testing import ScriptedModel

WORST = 0.01  # 10 output tokens at $0.001; the scripted reply below uses all ten, so it costs its worst


def _gateway(db: Database, limit: float) -> Gateway:
    config = ModelsConfig.parse(
        {
            "providers": {"paid": {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "prices": {"paid/m": {"input": 0.0, "output": 1000.0}},
            "budgets": {"key": {"k": limit}},
            "max_tokens": 10,
        }
    )
    model = ScriptedModel(default="w " * 10)
    return Gateway(config, db, adapters={"paid": model}, wait_for_records=True)


def _leases(db: Database) -> int:
    return int(db.query(lambda c: c.scalar("SELECT COUNT(*) FROM model_reservations")))


async def _calls(gw: Gateway, n: int) -> int:
    async def one() -> bool:
        try:
            await gw.complete("paid/m", "x", budget_scope={"key": "k"})
        except BudgetExceeded:
            return False
        return True

    return sum(await asyncio.gather(*(one() for _ in range(n))))


async def test_calls_spend_from_one_lease_which_goes_back_at_close(db: Database) -> None:
    gw = _gateway(db, 100.0)
    ledger = gw.ledger
    assert ledger is not None
    assert await _calls(gw, 10) == 10
    for _ in range(5):
        assert await _calls(gw, 1) == 1
    # Fifteen calls, one reservation: the lease, still holding what the calls did not spend.
    assert _leases(db) == 1
    status = ledger.status("key:k")
    assert status["spent"] == pytest.approx(15 * WORST)
    assert status["reserved"] == pytest.approx((LEASE_CALLS - 15) * WORST)
    await gw.aclose()
    assert _leases(db) == 0
    assert ledger.status("key:k") == {"limit": None, "spent": pytest.approx(15 * WORST), "reserved": 0.0}


async def test_two_processes_leasing_never_overspend_and_give_back_all_credit(db: Database) -> None:
    limit = 3.0  # room for 300 calls; a lease of 32 is taken only while it is at most 1/8 of what is left
    first, second = _gateway(db, limit), _gateway(db, limit)
    admitted = 0
    for _ in range(8):
        admitted += sum(await asyncio.gather(_calls(first, 25), _calls(second, 25)))
    await first.aclose()
    await second.aclose()
    status = Ledger(db, first.ledger.budgets).status("key:k")  # type: ignore[union-attr]
    assert status["spent"] <= limit + 1e-9, f"settled ${status['spent']:.2f} against ${limit:.2f}"
    assert status["spent"] == pytest.approx(admitted * WORST) and status["reserved"] == 0
    # What another process's lease held may have been refused here, at most one lease's worth.
    assert admitted >= 300 - LEASE_CALLS


async def test_a_crashed_process_lease_is_counted_as_spent_once_stale(db: Database) -> None:
    gw = _gateway(db, 100.0)
    assert await _calls(gw, 3) == 3
    # The process dies: its lease is never given back. The workers' upkeep expires it as spent, since
    # calls in flight at the crash may have been billed.
    ledger = Ledger(db, gw.ledger.budgets)  # type: ignore[union-attr]
    assert ledger.expire_reservations(older_than=-1.0) == 1
    status = ledger.status("key:k")
    assert status["spent"] == pytest.approx(LEASE_CALLS * WORST) and status["reserved"] == 0
    await gw.flush()


async def test_a_warmed_gateway_honours_a_limit_another_process_stored(db: Database) -> None:
    Ledger(db, BudgetConfig()).set_limit("key:z", 0.005)  # less than one call's worst case
    gw = _gateway(db, 100.0)
    await gw.warm()  # what a server does at start: connections, stored limits, learned factors
    with pytest.raises(BudgetExceeded, match="key:z"):
        await gw.complete("paid/m", "x", budget_scope={"key": "z"})
    assert await _calls(gw, 2) == 2 and _leases(db) == 1
    await gw.aclose()
