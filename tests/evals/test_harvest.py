"""`crewline eval harvest`: reviewed runs become cases, an edit is the expected value, splits are stable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crewline import App, Context
from crewline.config import Settings
from crewline.evals.datasets import held_out, read_dataset
from crewline.evals.harvest import harvest_cases, write_cases

from ..flows._drive import drive, step_once

APP = """
from typing import Any
from crewline import App, Context

app = App()


@app.workflow()
async def reply(ctx: Context, message: dict[str, Any]) -> str:
    draft = "Dear " + message["name"]
    decision = await ctx.approve("send the reply", preview=draft, risk="medium")
    return str(decision.edited or draft)
"""


def _app(project: Path, db_url: str) -> App:
    app = App(settings=Settings(project_dir=project, database_url=db_url))

    @app.workflow()
    async def reply(ctx: Context, message: dict[str, Any]) -> str:
        draft = "Dear " + message["name"]
        decision = await ctx.approve("send the reply", preview=draft, risk="medium")
        return str(decision.edited or draft)

    return app


async def _reviewed(app: App, name: str, edit: str | None) -> None:
    run_id = await app.start("reply", {"name": name})
    await step_once(app, "w")
    [request] = await app.reviews.list(run_id=run_id)
    await app.reviews.approve(request.id, by="ann", edit=edit)
    await drive(app, run_id)


async def test_harvest_takes_inputs_and_what_reviewers_approved_or_edited(
    tmp_path: Path, db_url: str
) -> None:
    app = _app(tmp_path, db_url)
    try:
        await _reviewed(app, "Bo", None)
        await _reviewed(app, "Cy", "Hi Cy, thanks!")
        await app.start("reply", {"name": "Di"})  # never reviewed: not a case
        await _reviewed(app, "Bo", "Dear Bo,")  # the same input again: the latest review wins
        found = await app.db.read(lambda conn: harvest_cases(conn, "reply", time.time() - 3600))
    finally:
        app.close()
    assert (found.runs, found.unreviewed) == (3, 0)
    expected = {c["input"]["name"]: (c["expected"], c["tags"][1]) for c in found.cases}
    assert expected == {"Bo": ("Dear Bo,", "edited"), "Cy": ("Hi Cy, thanks!", "edited")}
    assert all(c["split"] == held_out(c["id"]) for c in found.cases)
    path = tmp_path / "evals" / "reply.jsonl"
    assert write_cases(path, found.cases) == (2, 0)
    assert write_cases(path, found.cases) == (0, 2)  # harvesting again adds nothing twice
    ds = read_dataset(path)
    assert len(ds.cases) == 2 and ds.problems == ()
    assert {c.split for c in ds.cases} == {held_out(c.id) for c in ds.cases}


def test_the_cli_writes_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "replyapp.py").write_text(APP)
    (tmp_path / "crewline.toml").write_text('[crewline]\napp = "replyapp:app"\n')
    env = {**os.environ, "CREWLINE_PROJECT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "crewline", "eval", "harvest", "-w", "reply", "--since", "1d"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "0 runs of reply" in done.stdout and "0 cases added to reply.jsonl" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "crewline", "eval", "harvest", "-w", "reply", "--since", "soon"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
