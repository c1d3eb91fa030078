"""`crewline eval run workflow:NAME`: each case is a shadow run of the workflow; nothing irreversible."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crewline import App, Context
from crewline.config import Settings
from crewline.evals.runner import Tools
from crewline.evals.targets import EvalAsk, evaluate
from crewline.models import Gateway
from crewline.testing import ScriptedModel

from .conftest import write_dataset


async def test_a_workflow_target_runs_each_case_in_shadow(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "evals").mkdir()
    write_dataset(tmp_path, [("cheap pills", "spam"), ("lunch?", "ham"), ("free cruise", "spam")])
    sent: list[str] = []
    app = App(settings=Settings(project_dir=tmp_path, database_url=db_url, poll_interval=0.02))
    model = ScriptedModel(default=lambda r: "spam" if "cheap" in r.messages[-1].text else "ham")
    app.engine.models = Gateway.for_testing(model, app.db, wait_for_records=True)

    async def reply(to: str) -> str:
        sent.append(to)
        return "sent"

    @app.workflow()
    async def triage(ctx: Context, message: dict[str, str]) -> str:
        label = await ctx.llm(messages=f"spam or ham: {message['text']}")
        await ctx.step(reply, message["text"], effect="irreversible")
        return str(label)

    worker = app.worker(concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        ask = EvalAsk("workflow:triage", dataset="mail", concurrency=3)
        run = await evaluate(app.settings, app.db, Tools(app.models, runs=app), ask, lambda _: None)
        runs = await app.list_runs()
    finally:
        worker.stop()
        await task
        await app.aclose()
    assert run.status == "completed" and run.summary["runs"] == 3
    assert run.summary["scorers"]["exact"]["mean"] == 2 / 3  # "free cruise" is answered ham
    assert sent == [] and len(model.requests) == 3
    assert {r.shadow for r in runs} == {True} and len(runs) == 3
