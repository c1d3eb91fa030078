"""The app of the backup tests: a workflow of many short steps, so a backup lands mid-run."""

from __future__ import annotations

import time

from crewline import App, Context


def square(i: int) -> int:
    time.sleep(0.1)
    return i * i


def build(app: App) -> App:
    @app.workflow()
    async def squares(ctx: Context, n: int) -> dict[str, int]:
        total = 0
        for i in range(n):
            total += await ctx.step(square, i, name=f"square {i}")
        return {"n": n, "total": total}

    return app


app = build(App())
