"""Run in separate processes by test_ledger: hammer one budget through the gateway and count admissions."""

from __future__ import annotations

import asyncio
import sys

from crewline.errors import BudgetExceeded
from crewline.models import Gateway, ModelsConfig
from crewline.store import Database
from crewline.testing import ScriptedModel


async def _calls(url: str, n: int) -> int:
    db = Database(url)
    config = ModelsConfig.parse(
        {
            "providers": {"paid": {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "prices": {"paid/m": {"input": 0.0, "output": 1000.0}},  # $0.001 per output token
            "budgets": {"workflow": {"shared": 1.0}},
            "max_tokens": 10,  # worst case $0.01 a call, real cost $0.001-0.002
        }
    )
    gw = Gateway(config, db, adapters={"paid": ScriptedModel(default="ok")}, wait_for_records=True)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        try:
            await gw.complete("paid/m", "x", budget_scope={"workflow": "shared"})
            admitted += 1
        except BudgetExceeded:
            pass

    await asyncio.gather(*(one() for _ in range(n)))
    await gw.aclose()
    db.close()
    return admitted


if __name__ == "__main__":
    print(asyncio.run(_calls(sys.argv[1], int(sys.argv[2]))))
