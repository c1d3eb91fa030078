"""A workflow on a two-second cron schedule for the cron-under-kills test: each run appends its id to a file."""

from __future__ import annotations

import os

from crewline import App, Context


def note(run_id: str) -> str:
    with open(os.environ["CRON_TICKS_FILE"], "a", encoding="utf-8") as f:
        f.write(run_id + "\n")
    return run_id


async def ticker(ctx: Context) -> str:
    return await ctx.step(note, ctx.run_id, effect="idempotent")


app = App()
app.workflow(name="ticker", schedule="* * * * * */2")(ticker)
