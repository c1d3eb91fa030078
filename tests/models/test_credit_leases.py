"""Budget credit leased to a process: budgeted calls without a reservation write each, and still no
budget overspent across processes (two gateways on one database stand for two processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from crewline.errors import BudgetExceeded
from crewline.models import Gateway, ModelsConfig
from crewline.models.config import BudgetConfig
from crewline.models.credit import LEASE_CALLS, LEASE_SECONDS, CreditLeases, Hold
from crewline.models.ledger import BudgetAlert, Ledger, to_nusd
from crewline.store import Conn, Database
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


class _Process:
    """A process's leases driven the way the call meter drives them, on a clock the test moves."""

    def __init__(self, db: Database, limit: float) -> None:
        self.db = db
        self.now = 0.0
        self.ledger = Ledger(db, BudgetConfig(key={"k": limit}))
        self.scopes = self.ledger.scopes({"key": "k"})
        self.queued: list[Callable[[Conn], list[BudgetAlert]]] = []
        self.credit = CreditLeases(self.ledger, self.queued.append, clock=lambda: self.now)

    async def hold(self) -> Hold | None:
        """Hold one call's worst case, or None when the budget refuses it."""
        try:
            return await self.credit.hold(self.scopes, to_nusd(WORST))
        except BudgetExceeded:
            return None

    def end(self, hold: Hold) -> None:
        """The call ended costing its worst case: its settlement is queued, as the meter queues it."""
        credit, cost, limits = self.credit, to_nusd(WORST), dict(self.scopes)
        self.queued.append(lambda conn: credit.settle_in(conn, hold, cost, limits))
        credit.ended(hold, cost)

    async def flush(self) -> None:
        batch, self.queued[:] = list(self.queued), []
        await self.db.write(lambda conn: [alert for write in batch for alert in write(conn)])


def _reservations(db: Database) -> list[int]:
    rows = db.query(lambda c: c.all("SELECT amount_nusd FROM model_reservations ORDER BY amount_nusd DESC"))
    return [int(r[0]) for r in rows]


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background lease write never landed")


async def test_a_half_spent_lease_is_refilled_in_the_background_sized_to_the_spend_rate(
    db: Database,
) -> None:
    proc = _Process(db, 1000.0)
    worst = to_nusd(WORST)
    first = await proc.hold()  # the one call that waits for a lease write: there is no lease yet
    assert first is not None and first.lease is not None
    proc.end(first)
    for i in range(1, 16):  # fifteen more calls, one every 10 ms: half the lease spent
        proc.now = i * 0.01
        hold = await proc.hold()
        assert hold is not None and hold.lease is first.lease
        proc.end(hold)
    await proc.flush()
    proc.now = 0.16
    trigger = await proc.hold()
    # The call that took the lease past half holds from it at once; the next lease is only being taken.
    assert trigger is not None and trigger.lease is first.lease
    assert _reservations(db) == [LEASE_CALLS * worst - 16 * worst]
    await _until(lambda: len(_reservations(db)) == 2)
    # 16 worst cases spent in 0.16 s is 100 a second: the new lease holds two seconds of that.
    assert _reservations(db)[0] == round(100 * worst * LEASE_SECONDS) > LEASE_CALLS * worst
    after = await proc.hold()
    assert after is not None and after.lease is not None and after.lease is not first.lease
    proc.end(trigger)  # the old lease's last call ends: what it still holds goes back
    proc.end(after)
    await proc.flush()
    status = proc.ledger.status("key:k")
    assert status["spent"] == pytest.approx(18 * WORST)
    assert status["reserved"] == pytest.approx(round(100 * LEASE_SECONDS) * WORST - WORST)
    assert len(_reservations(db)) == 1


async def test_background_refills_in_two_processes_never_lease_past_the_limit(db: Database) -> None:
    limit = 30.0  # 3,000 calls at their worst case
    procs = [_Process(db, limit), _Process(db, limit)]
    admitted = 0
    while True:
        refused = 0
        for proc in procs:
            holds: list[Hold] = []
            for _ in range(20):  # a burst: 20 calls a millisecond apart, leases refilled meanwhile
                proc.now += 0.001
                hold = await proc.hold()
                if hold is None:
                    refused += 1
                else:
                    holds.append(hold)
            for hold in holds:
                proc.end(hold)
            admitted += len(holds)
            await proc.flush()
            status = procs[0].ledger.status("key:k")
            assert status["spent"] + status["reserved"] <= limit + 1e-9, status
        if refused == 40:
            break
    for proc in procs:
        proc.credit.close()
        await proc.flush()
    status = procs[0].ledger.status("key:k")
    # Every call admitted was settled within the limit, and both processes together spent all of it.
    assert status == {"limit": None, "spent": pytest.approx(admitted * WORST), "reserved": 0.0}
    assert admitted == round(limit / WORST)
