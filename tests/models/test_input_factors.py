"""Learned input factors: a budgeted call waits for the first read of them, never for a refresh."""

from __future__ import annotations

import asyncio

from crewline.models.calibration import REFRESH, InputCalibration
from crewline.store import Database


async def test_calls_wait_for_the_first_read_only_and_reserve_on_the_copy_while_it_refreshes(
    db: Database,
) -> None:
    db.run(lambda conn: InputCalibration.record_in(conn, "up/a", 2.0, 0.0))
    now = [0.0]
    calibration = InputCalibration(db, clock=lambda: now[0])
    assert dict(await calibration.factors()) == {"up/a": 2.0}  # the first read, waited for
    db.run(lambda conn: InputCalibration.record_in(conn, "up/b", 3.0, 0.0))  # another process's miss
    now[0] = REFRESH
    # Due for a refresh: the call goes on at once with the copy it has, the read on its way.
    assert dict(await calibration.factors()) == {"up/a": 2.0}
    for _ in range(500):
        if calibration.tokens("up/b", 10) == 30:
            break
        await asyncio.sleep(0.01)
    assert calibration.tokens("up/b", 10) == 30, "the refresh never landed"
    assert dict(await calibration.factors()) == {"up/a": 2.0, "up/b": 3.0}
