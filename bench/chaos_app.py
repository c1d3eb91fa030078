"""The workflow ``bench/chaos.py`` runs while everything fails: model calls, a durable sleep, an approval for
every third run, and two irreversible deliveries to the sink, each carrying its step's idempotency key.

Workers load it as ``chaos_app:app`` (``bench/`` on ``PYTHONPATH``); the sink's URL comes from
``CHAOS_SINK_URL``. Model prompts name the run and the call, so the fake provider can tell a retry of a
failed call from a second payment for a finished one.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from crewline import App, Context, RetryPolicy

# Upstream fails 30% of the time and a call may time out twice per attempt: be patient, as an operator
# facing a flaky provider would be, so that a run fails only when something is really wrong.
PATIENT = RetryPolicy(max_attempts=12, initial_delay=0.2, max_delay=2.0)


async def deliver(what: str, run_id: str, idempotency_key: str) -> dict[str, Any]:
    """The irreversible effect: the sink applies each idempotency key once and counts every delivery."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            os.environ["CHAOS_SINK_URL"] + "/effects",
            json={"what": what, "run": run_id},
            headers={"Idempotency-Key": idempotency_key},
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


async def chaos(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    i = int(job["i"])
    draft = await ctx.llm(messages=f"chaos {ctx.run_id} draft", max_tokens=16, retry=PATIENT, name="draft")
    await ctx.sleep(float(job.get("sleep", 0.5)))
    if i % int(job.get("approve_every", 3)) == 0:
        decision = await ctx.approve("ship the draft", preview=draft, timeout="1h", on_timeout="escalate")
        if not decision.approved:
            return {"i": i, "shipped": False}
    first = await ctx.step(deliver, "first", ctx.run_id, effect="irreversible", name="deliver-first")
    summary = await ctx.llm(
        messages=f"chaos {ctx.run_id} summary", max_tokens=16, retry=PATIENT, name="summary"
    )
    second = await ctx.step(deliver, "second", ctx.run_id, effect="irreversible", name="deliver-second")
    return {"i": i, "shipped": True, "effects": [first["key"], second["key"]], "summary": summary}


app = App()
app.workflow(name="chaos", on_failure="review")(chaos)


async def tick(ctx: Context) -> dict[str, Any]:
    """Every two seconds, one run (``cron:tick:<time>``) delivering once under its own id."""
    return await ctx.step(deliver, "tick", ctx.run_id, effect="idempotent", idempotency_key=ctx.run_id)


app.workflow(name="tick", schedule="* * * * * */2")(tick)
