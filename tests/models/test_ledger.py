"""The budget ledger: atomic reservations, settlement, alerts, and no overspend under concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from crewline.errors import BudgetExceeded
from crewline.models import BudgetAlert, Gateway, ModelsConfig
from crewline.models.config import BudgetConfig
from crewline.models.ledger import Ledger, from_nusd, to_nusd
from crewline.store import Database
from crewline.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[2]


def _gateway(db: Database, budgets: dict[str, object], **kwargs: object) -> tuple[Gateway, ScriptedModel]:
    model = ScriptedModel(default="ok")
    config = ModelsConfig.parse(
        {
            "providers": {"paid": {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "prices": {"paid/m": {"input": 0.0, "output": 1000.0}},
            "budgets": budgets,
            "max_tokens": 10,
        }
    )
    return Gateway(config, db, adapters={"paid": model}, wait_for_records=True, **kwargs), model  # type: ignore[arg-type]


def test_reserve_checks_every_scope_in_one_write(db: Database) -> None:
    ledger = Ledger(db, BudgetConfig(day=1.0, workflow={"w": 0.5}))
    scopes = ledger.scopes({"workflow": "w", "run": "r1"})
    assert set(scopes) == {k for k in scopes if k.split(":")[0] in ("day", "month", "workflow", "run")}
    db.run(lambda c: ledger.reserve_in(c, scopes, to_nusd(0.3)))
    with pytest.raises(BudgetExceeded) as info:
        db.run(lambda c: ledger.reserve_in(c, scopes, to_nusd(0.3)))
    e = info.value
    assert (e.budget, e.limit, e.spent, e.requested) == ("workflow:w", 0.5, 0.3, 0.3)
    assert "workflow:w" in str(e) and "$0.5000" in str(e)
    # the failed reservation left nothing behind in any scope
    assert ledger.status("run:r1")["reserved"] == pytest.approx(0.3)


def test_settle_releases_and_adds_real_cost(db: Database) -> None:
    alerts: list[BudgetAlert] = []
    ledger = Ledger(db, BudgetConfig(workflow={"w": 1.0}), on_alert=alerts.append)
    scopes = ledger.scopes({"workflow": "w"})
    res = db.run(lambda c: ledger.reserve_in(c, scopes, to_nusd(0.9)))
    found = db.run(lambda c: ledger.settle_in(c, res, list(scopes), to_nusd(0.6), scopes))
    ledger.emit(found)
    assert ledger.status("workflow:w") == {"limit": None, "spent": pytest.approx(0.6), "reserved": 0.0}
    assert [(a.scope, a.level) for a in alerts] == [("workflow:w", 50)]
    found = db.run(lambda c: ledger.settle_in(c, None, list(scopes), to_nusd(0.45), scopes))
    assert [a.level for a in found] == [100]
    assert db.run(lambda c: ledger.settle_in(c, None, list(scopes), 1, scopes)) == []  # alerted once


def test_stored_limit_overrides_config_and_crashed_reservations_expire(db: Database) -> None:
    now = [1000.0]
    ledger = Ledger(db, BudgetConfig(), clock=lambda: now[0])
    ledger.set_limit("key:alice", 0.2)
    scopes = ledger.scopes({"key": "alice"})
    db.run(lambda c: ledger.reserve_in(c, scopes, to_nusd(0.15)))
    with pytest.raises(BudgetExceeded, match="key:alice"):
        db.run(lambda c: ledger.reserve_in(c, scopes, to_nusd(0.1)))
    now[0] += 3600
    assert ledger.expire_reservations(older_than=600) == 1
    assert ledger.status("key:alice") == {"limit": 0.2, "spent": pytest.approx(0.15), "reserved": 0.0}


async def test_gateway_refuses_over_budget_and_records_spend(db: Database) -> None:
    gw, model = _gateway(db, {"workflow": {"triage": 0.025}})
    for _ in range(2):
        await gw.complete("paid/m", "x", budget_scope={"workflow": "triage"})  # worst case $0.01 each
    with pytest.raises(BudgetExceeded) as info:
        await gw.complete("paid/m", "x", budget_scope={"workflow": "triage"}, max_tokens=30)
    assert info.value.budget == "workflow:triage"
    assert len(model.requests) == 3 - 1
    spent = gw.ledger.status("workflow:triage")["spent"]  # type: ignore[union-attr]
    assert spent == pytest.approx(0.002)  # one output token at $1000/M per call
    # a run-time limit (set in the store) is honoured too
    gw.ledger.set_limit("run:r9", 0.001)  # type: ignore[union-attr]
    with pytest.raises(BudgetExceeded, match="run:r9"):
        await gw.complete("paid/m", "x", budget_scope={"run": "r9"})
    await gw.aclose()


async def test_concurrent_calls_in_one_process_cannot_overspend(db: Database) -> None:
    gw, _ = _gateway(db, {"workflow": {"w": 0.1}})  # room for exactly 10 worst cases of $0.01

    async def one() -> bool:
        try:
            await gw.complete("paid/m", "x", budget_scope={"workflow": "w"})
            return True
        except BudgetExceeded:
            return False

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert sum(results) >= 10  # settled calls free most of their reservation for later ones
    status = gw.ledger.status("workflow:w")  # type: ignore[union-attr]
    assert status["spent"] <= 0.1 and status["reserved"] == 0  # type: ignore[operator]
    await gw.aclose()


def test_several_processes_cannot_overspend(db: Database) -> None:
    """Four processes race 25 concurrent calls each for a $1 budget with $0.01 worst-case calls."""
    env = {"PYTHONPATH": str(ROOT)}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.models._budget_worker", db.url, "25"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    admitted = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        admitted.append(int(out.strip().splitlines()[-1]))
    ledger = Ledger(db, BudgetConfig())
    status = ledger.status("workflow:shared")
    assert status["reserved"] == 0
    assert sum(admitted) == 100  # real cost ($0.001/call) leaves room for everyone...
    assert status["spent"] == pytest.approx(0.1)  # ...and every settled cost is counted exactly once
    assert from_nusd(to_nusd(0.1)) == 0.1


def test_several_processes_stop_exactly_at_the_limit(db: Database) -> None:
    """With settlement equal to the worst case, exactly limit / cost calls get through across processes."""
    import os

    code = (
        "import asyncio, sys\n"
        "from crewline.errors import BudgetExceeded\n"
        "from crewline.models.config import BudgetConfig\n"
        "from crewline.models.ledger import Ledger, to_nusd\n"
        "from crewline.store import Database\n"
        "db = Database(sys.argv[1]); ledger = Ledger(db, BudgetConfig(workflow={'tight': 0.5}))\n"
        "scopes = ledger.scopes({'workflow': 'tight'}); ok = 0\n"
        "async def one():\n"
        "    global ok\n"
        "    try:\n"
        "        await ledger.reserve(scopes, to_nusd(0.01)); ok += 1\n"
        "    except BudgetExceeded:\n"
        "        pass\n"
        "async def main():\n"
        "    await asyncio.gather(*(one() for _ in range(30)))\n"
        "asyncio.run(main()); db.close(); print(ok)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db.url],
            cwd=ROOT,
            env={**os.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    total = 0
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        total += int(out.strip())
    assert total == 50
    assert Ledger(db, BudgetConfig()).status("workflow:tight")["reserved"] == pytest.approx(0.5)
