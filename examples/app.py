"""Example workflows: customer onboarding with a durable wait, and a daily digest on a cron schedule.

Start a worker on them with ``scripts/run`` (or ``crewline worker --app examples.app:app``), then:

    crewline run onboard --app examples.app:app --input '{"id": "c1", "email": "ada@example.com"}' --wait
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field

from crewline import App, Context, WaitTimeout

app = App()
app.queue("outbox", concurrency=2)  # never more than two sends at once, across all workers

OUTBOX = Path(".crewline/outbox")


class Customer(BaseModel):
    id: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = ""


class Summary(BaseModel):
    customer_id: str
    plan: str
    welcome_sent: bool
    activated: bool


async def fetch_profile(customer_id: str) -> dict[str, str]:
    # Stands in for a CRM lookup: deterministic, safe to repeat.
    plan = ["starter", "pro", "team"][int(hashlib.sha256(customer_id.encode()).hexdigest(), 16) % 3]
    return {"id": customer_id, "plan": plan}


def send_welcome(email: str, plan: str, idempotency_key: str) -> str:
    # Stands in for an email API: writes the message to the outbox, keyed so a resend is visible.
    OUTBOX.mkdir(parents=True, exist_ok=True)
    path = OUTBOX / f"{idempotency_key}.json"
    path.write_text(json.dumps({"to": email, "template": f"welcome-{plan}"}))
    return str(path)


@app.workflow(queue="outbox")
async def onboard(ctx: Context, customer: Customer) -> Summary:
    profile = await ctx.step(fetch_profile, customer.id, effect="read")
    await ctx.step(send_welcome, customer.email, profile["plan"], effect="irreversible",
                   idempotency_key=f"welcome-{customer.id}")  # fmt: skip
    activated = True
    try:
        await ctx.wait_for("activated", timeout="2d")
    except WaitTimeout:
        activated = False
    return Summary(customer_id=customer.id, plan=profile["plan"], welcome_sent=True, activated=activated)


@app.workflow(schedule="0 9 * * *")
async def daily_digest(ctx: Context) -> dict[str, int]:
    """Every day at 09:00 UTC: count yesterday's finished runs."""
    counts = await ctx.step(count_runs)
    return counts


async def count_runs() -> dict[str, int]:
    runs = await app.list_runs(limit=1000)
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return out
