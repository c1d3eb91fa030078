"""The workflows bench/scale.py runs: ten cheap steps, or three model calls waiting 100 ms each."""

from __future__ import annotations

import os

from crewline import App, Context, Settings


async def inc(x: int) -> int:
    return x + 1


async def steps(ctx: Context, n: int) -> int:
    for _ in range(10):
        n = await ctx.step(inc, n)
    return n


async def model(ctx: Context, n: int) -> int:
    for i in range(3):
        await ctx.llm(messages=f"scale {n} {i}", max_tokens=8)
    return n


models = {
    "default": "fake/scale",
    "providers": {"fake": {"format": "openai", "base_url": os.environ.get("SCALE_FAKE_URL", "") + "/v1"}},
    "prices": {"fake/scale": {"input": 0.0, "output": 0.0}},
}
app = App(settings=Settings.load().with_(poll_interval=0.05, sections={"models": models}))
app.workflow(name="steps")(steps)
app.workflow(name="model")(model)
