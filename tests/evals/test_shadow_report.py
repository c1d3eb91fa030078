"""`crewline shadow report`: agreement between live runs and their shadows, held-back calls."""

from __future__ import annotations

import time

from crewline.evals.shadow_report import shadow_report

from ..flows._drive import drive
from ..flows.test_shadow import World, _shadowed_app


async def test_the_report_pairs_live_and_shadow_runs(db_url: str) -> None:
    world = World()
    app = _shadowed_app(db_url, world, 1.0)
    try:
        for customer in ("ann", "bob"):
            live = await app.start("settle", customer)
            await drive(app, live)
            await drive(app, f"{live}~shadow")
        await app.start("settle", "cy")  # not run yet: counted as unfinished
        report = await app.db.read(lambda conn: shadow_report(conn, "settle", time.time() - 3600))
    finally:
        app.close()
    assert (report.candidate, report.pairs, report.unfinished) == ("settle_v2", 2, 1)
    assert report.agreement == 0.0 and report.fields == {"(output)": 0.0}  # "sent" vs "held back"
    assert list(report.held_back.values()) == [2] and world.sent == ["ann", "bob"]
    assert report.seconds_live >= 0 and report.cost_shadow == 0.0
