"""`crewline runs` and `crewline prune` end to end: runs made in-process, inspected by the real command."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import App, Context, Settings
from crewline.flows.prompts import sync_prompts
from crewline.models import Gateway, ModelsConfig
from crewline.testing import FakeProvider, ScriptedModel

from .flows._drive import drive
from .flows.test_ai_steps import models_table
from .flows.test_context_window import WINDOW, email_thread, models_config
from .test_cli import cli  # noqa: F401  (the fixture)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    a = App(settings=Settings().with_(database_url=sqlite_url))

    async def shout(text: str) -> str:
        return text.upper()

    @a.workflow()
    async def echo(ctx: Context, text: str) -> Any:
        return {"said": await ctx.step(shout, text)}

    yield a
    a.close()


def on_terminal(env: dict[str, str], cwd: Path, *args: str, answer: bytes) -> tuple[int, str]:
    """Run crewline with a pseudo-terminal as stdin and stdout, typing ``answer``."""
    main, tty = pty.openpty()
    command = [sys.executable, "-m", "crewline", *args]
    proc = subprocess.Popen(command, stdin=tty, stdout=tty, stderr=tty, env=env, cwd=cwd)
    os.close(tty)
    os.write(main, answer)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(60), out.decode()


async def test_prune_has_a_dry_run_asks_first_and_a_pruned_run_says_so(app: App, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    old = await app.start("echo", "hello")
    await drive(app, old)
    recent = await app.start("echo", "fresh")
    await drive(app, recent)
    three_days_ago = time.time() - 3 * 86400
    await app.db.write(
        lambda c: c.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (three_days_ago, old))
    )

    dry = cli("prune", "--older-than", "1d", "--dry-run").stdout
    assert dry.startswith("would prune 1 runs' input and output, 1 steps, 0 events")
    refused = cli("prune", "--older-than", "1d", check=2).stderr
    assert "not a terminal" in refused and "pass --yes" in refused and "--dry-run" in refused
    code, out = on_terminal(cli.env, tmp_path, "prune", "--older-than", "1d", answer=b"n\n")
    assert code == 1 and "prune 1 runs' input and output" in out and "nothing pruned" in out
    assert (await app.get_run(old)).input == "hello" and len(await app.steps(old)) == 1

    code, out = on_terminal(cli.env, tmp_path, "prune", "--older-than", "1d", answer=b"y\n")
    assert code == 0 and "pruned 1 runs' input and output, 1 steps" in out
    shown = cli("runs", "show", old).stdout
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"input     (pruned on {day}" in shown and f"steps     (pruned on {day}" in shown
    assert "null" not in shown
    assert json.loads(cli("runs", "show", old, "--json").stdout)["pruned_at"] > three_days_ago
    assert json.loads(cli("runs", "show", recent, "--json").stdout)["pruned_at"] is None
    assert cli("prune", "--older-than", "1d").stdout.startswith("nothing to prune: no finished run ended")
    assert cli("prune", "--older-than", "1s", "--yes").stdout.startswith("pruned 1 runs'")


LONG = "Customer asks where the refund for order 4711 is; it was promised within five business days and "


class Triage(BaseModel):
    urgency: str
    summary: str


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


@pytest.fixture
def model_app(sqlite_url: str, fake: FakeProvider) -> Iterator[App]:
    a = App(settings=Settings().with_(database_url=sqlite_url))
    a.engine.models = Gateway(
        ModelsConfig.parse(models_table(fake.url)),
        a.db,
        environ={"FAKE_KEY": "sk-test"},
        wait_for_records=True,
    )

    @a.workflow()
    async def triage(ctx: Context, body: str) -> Any:
        t = await ctx.llm(messages=f"Triage: {body}", output=Triage, model="cheap")
        return await ctx.step(file_ticket, t.urgency)

    yield a
    a.close()


async def file_ticket(urgency: str) -> str:
    return f"filed as {urgency}"


async def two_triages(app: App, fake: FakeProvider) -> tuple[str, str]:
    fake.reply(json={"urgency": "high", "summary": LONG + "is now late."}, input_tokens=10, output_tokens=5)
    fake.reply(
        json={"urgency": "high", "summary": LONG + "is not late yet."}, input_tokens=12, output_tokens=6
    )
    a = await app.start("triage", "Where is my refund?")
    await drive(app, a)
    b = await app.start("triage", "Where is my refund?")
    await drive(app, b)
    return a, b


async def test_list_and_show_have_cost_tokens_and_duration(model_app: App, fake: FakeProvider, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, _ = await two_triages(model_app, fake)
    listed = cli("runs", "list").stdout.splitlines()
    assert listed[0].split()[-3:] == ["duration", "tokens", "cost"]
    row = next(line for line in listed if line.startswith(a))
    assert row.split()[-2:] == ["15", "$0.015000"]
    [summary] = [r for r in json.loads(cli("runs", "list", "--json").stdout) if r["id"] == a]
    assert (summary["tokens"], summary["cost"]) == (15, pytest.approx(0.015)) and summary["duration_s"] >= 0
    shown = cli("runs", "show", a).stdout
    assert "cost      $0.015000 (1 model call, 10 tokens in, 5 out)" in shown and "duration  " in shown
    step_row = next(line for line in shown.splitlines() if line.startswith("1 "))
    assert "15" in step_row.split() and "$0.015000" in step_row.split()


async def test_show_one_step_in_full(model_app: App, fake: FakeProvider, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, _ = await two_triages(model_app, fake)
    full = cli("runs", "show", a, "--step", "1").stdout
    assert f"step      1 of run {a}: llm" in full
    assert "model     fake/mid" in full and "cost      $0.015000" in full and "tokens    10 in, 5 out" in full
    assert f"summary: {LONG}is now late." in full  # the whole output, not 60 characters of it
    assert "Triage: Where is my refund?" in full  # what the model was asked
    assert "started   " in full and "duration  " in full
    second = cli("runs", "show", a, "--step", "2").stdout
    assert "output:\n  filed as high" in second and "model" not in second
    missing = cli("runs", "show", a, "--step", "9", check=2).stderr
    assert f"run {a} has no step 9 (it has steps 1 to 2)" in missing
    detail = json.loads(cli("runs", "show", a, "--step", "1", "--json").stdout)
    assert detail["output"]["output"]["summary"] == LONG + "is now late." and detail["usage"]["cost"] > 0


async def test_diff_shows_where_outputs_differ(model_app: App, fake: FakeProvider, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = await two_triages(model_app, fake)
    diff = cli("runs", "diff", a, b).stdout
    rows = {line.split()[0]: line.split() for line in diff.splitlines() if line[:1].isdigit()}
    assert rows["1"][-1] == "differs" and rows["2"][-1] == "same"
    assert f"-    summary: {LONG}is now late." in diff and f"+    summary: {LONG}is not late yet." in diff
    assert "urgency" not in diff  # only what differs
    data = json.loads(cli("runs", "diff", a, b, "--json").stdout)
    assert [(r["step"], r["same"]) for r in data] == [(1, False), (2, True)]
    assert data[0]["fields"] == ["output"]


async def test_rerun_from_a_checkpoint_keeps_the_earlier_attempt_in_show(app: App, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    async def shout(text: str) -> str:
        return text.upper()

    @app.workflow()
    async def drafts(ctx: Context, text: str) -> Any:
        draft = await ctx.step(shout, text, name="draft")
        await ctx.checkpoint("drafted")
        return await ctx.step(shout, draft + "!", name="send")

    rid = await app.start("drafts", "hi")
    await drive(app, rid)
    unknown = cli("runs", "rerun", rid, "--from", "sent", check=2).stderr
    assert unknown.strip().splitlines() == [
        f"crewline: error: cannot rerun run {rid} from 'sent': it has no step of that name; its steps and checkpoints "
        "are draft, drafted, send"
    ]
    out = cli("runs", "rerun", rid, "--from", "drafted").stdout
    assert out.startswith(f"run {rid} reruns from step 2 as attempt 2")
    again = cli("runs", "rerun", rid, "--from", "drafted", check=2).stderr
    assert f"cannot rerun run {rid}: it is pending; only completed, failed or cancelled runs" in again
    await drive(app, rid)
    shown = cli("runs", "show", rid).stdout
    assert "attempt   2 (rerun" in shown and "status    completed" in shown
    assert "attempt 1 (ended completed; rerun from step 2 on " in shown
    history = shown.split("attempt 1 (ended")[1].splitlines()
    assert [line.split()[:3] for line in history[3:5]] == [
        ["2", "checkpoint", "drafted"],
        ["3", "step", "send"],
    ]
    data = json.loads(cli("runs", "show", rid, "--json").stdout)
    assert data["attempt"] == 2 and [s["name"] for s in data["steps"]] == ["draft", "drafted", "send"]
    assert [(h["attempt"], h["from_step"], len(h["steps"])) for h in data["history"]] == [(1, 2, 2)]
    fork = cli("runs", "fork", rid, "--from", "drafted").stdout.strip()
    assert json.loads(cli("runs", "show", fork, "--json").stdout)["fork_step"] == 2
    assert "--from STEP" in cli("runs", "rerun", "--help").stdout


async def test_fork_set_changes_what_the_fork_calls_and_diff_shows_where(  # type: ignore[no-untyped-def]
    model_app: App,
    fake: FakeProvider,
    cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    reply = prompts / "reply.md"
    reply.write_text("---\nmodel: cheap\n---\nReply kindly to {{ text }}\n")
    sync_prompts(model_app.db, prompts)
    reply.write_text("---\nmodel: cheap\n---\nReply tersely to {{ text }}\n")
    sync_prompts(model_app.db, prompts)  # latest is the terse one; production stays the kind one

    @model_app.workflow()
    async def answer(ctx: Context, text: str) -> Any:
        said = await ctx.llm("reply", input={"text": text})
        return await ctx.step(file_ticket, said)

    fake.reply("Dear customer, it is on its way.")
    fake.reply("Shipped.")
    rid = await model_app.start("answer", "where is my parcel?")
    await drive(model_app, rid)
    fork = cli(
        "runs", "fork", rid, "--from", "1", "--set", "model=strong", "--set", "prompt=reply@latest"
    ).stdout
    forked = await drive(model_app, fork.strip())
    assert forked.output == "filed as Shipped."
    original, varied = (r.body for r in fake.requests[-2:])
    assert (original["model"], varied["model"]) == ("mid", "big")  # model=strong reached the provider
    assert "Reply kindly to where is my parcel?" in json.dumps(original["messages"])
    assert "Reply tersely to where is my parcel?" in json.dumps(varied["messages"])
    diff = cli("runs", "diff", rid, forked.id).stdout
    rows = {line.split()[0]: line.split() for line in diff.splitlines() if line[:1].isdigit()}
    assert rows["1"][-1] == "differs" and rows["2"][-1] == "differs"
    assert "-  filed as Dear customer, it is on its way." in diff and "+  filed as Shipped." in diff
    wrong = cli("runs", "fork", rid, "--from", "1", "--set", "temperature=2", check=2).stderr
    assert "only model= and prompt= can vary in a fork" in wrong


async def test_show_step_says_what_was_cut_to_fit_the_window(sqlite_url: str, cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    app = App(settings=Settings().with_(database_url=sqlite_url))
    app.engine.models = Gateway.for_testing(ScriptedModel("ok"), app.db, config=models_config())
    thread = email_thread(200_000)

    @app.workflow()
    async def triage(ctx: Context) -> Any:
        return await ctx.llm(messages=thread)

    rid = await app.start(triage)
    assert (await drive(app, rid)).status == "completed"
    await app.aclose()
    shown = cli("runs", "show", rid, "--step", "1").stdout
    cut = next(line for line in shown.splitlines() if line.startswith("cut "))
    assert cut.startswith("cut       truncate: ") and "from message 1 (user)" in cut
    assert f"to fit a window of {WINDOW} tokens" in cut
    detail = json.loads(cli("runs", "show", rid, "--step", "1", "--json").stdout)
    assert f"{detail['output']['cut']['chars_cut']} characters" in cut
