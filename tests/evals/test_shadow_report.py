"""`crewline shadow report`: agreement between live runs and their shadows, held-back calls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_the_promote_command_needs_a_section_and_something_to_compare(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text('[shadow.settle]\nworkflow = "settle_v2"\n')
    env = {**os.environ, "CREWLINE_PROJECT": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crewline", "shadow", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    assert "no [shadow.other]" in cli("promote", "other").stderr
    refused = cli("promote", "settle")
    assert refused.returncode == 2 and "no finished shadow run of settle_v2" in refused.stderr
    forced = cli("promote", "settle", "--force")
    assert forced.returncode == 0 and "settle_v2 now serves settle's live triggers" in forced.stdout
    assert cli("promote", "settle", "--undo").returncode == 0
    assert cli("promote", "settle", "--undo").returncode == 2
    report = cli("report", "settle")
    assert report.returncode == 0 and "no shadow runs beside settle" in report.stdout
