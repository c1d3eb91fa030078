"""Example workflows for a one-person company: inbox triage with an approval before any reply is sent
(started by the inbox trigger for each email when ``[triggers.inbox]`` is configured, replying over SMTP
when ``[connectors.outbox]`` is), lead follow-up drafting from the contact in the CRM (read through the
HTTP connector), ticket summaries that escalate from the cheap model to the strong one, customer
onboarding with a durable wait, and a daily digest on a cron schedule.

Start the server (or a worker) on them with ``scripts/run``, then for instance:

    crewline run triage_email --input '{"sender": "ada@example.com", "subject": "Refund?", "text": "..."}'
    crewline review list
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field

from crewline import App, Context, WaitTimeout, tool
from crewline.connectors.http import HttpOperation
from crewline.connectors.mapping import FieldMap
from crewline.connectors.records import Contact, Message

app = App()
app.queue("outbox", concurrency=2)  # never more than two sends at once, across all workers

OUTBOX = app.settings.project_dir / ".crewline" / "outbox"


class Email(BaseModel):
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    subject: str
    body: str


class Triage(BaseModel):
    category: Literal["support", "sales", "billing", "spam", "other"]
    urgency: Literal["low", "medium", "high"]
    summary: str


class Lead(BaseModel):
    contact_id: str  # the contact's id in the CRM ([connectors.crm])
    interest: str
    days_since_contact: int = 7


class ContactId(BaseModel):
    id: str


class CrmNote(BaseModel):
    contact_id: str
    text: str


# The CRM's contact JSON, field by field, as a canonical Contact (unmapped fields land in Contact.extra).
CRM_CONTACT = FieldMap(
    Contact,
    {
        "source_id": "id",
        "name": "properties.full_name",
        "email": "properties.email",
        "company": "company.name",
    },
)
GET_CONTACT = HttpOperation(
    "get_contact", "read", ContactId, method="GET", path="/contacts/{id}", map=CRM_CONTACT
)
ADD_NOTE = HttpOperation("add_note", "idempotent", CrmNote, method="POST", path="/notes")


class Ticket(BaseModel):
    id: str
    title: str
    messages: list[str]


class TicketSummary(BaseModel):
    summary: str
    next_step: str
    confidence: float = Field(ge=0, le=1)


class Customer(BaseModel):
    id: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = ""


class Summary(BaseModel):
    customer_id: str
    plan: str
    welcome_sent: bool
    activated: bool


def _deliver(kind: str, to: str, body: str, key: str) -> str:
    """Stands in for an email API: writes the message to the outbox, keyed so a resend is visible."""
    OUTBOX.mkdir(parents=True, exist_ok=True)
    path = OUTBOX / f"{key}.json"
    path.write_text(json.dumps({"kind": kind, "to": to, "body": body}))
    return f"{kind}:{key}"  # a message id, as an email API returns (no server path in run records)


@tool(effect="irreversible")
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email to a customer."""
    key = hashlib.sha256(f"{to}|{subject}|{body}".encode()).hexdigest()[:16]
    return _deliver("email", to, f"{subject}\n\n{body}", key)


@app.workflow(budget="$0.50/run", on_budget="degrade")
async def triage_email(ctx: Context, message: Message) -> dict[str, str]:
    """Triage with the cheap model; for what needs an answer, draft with the strong one and ask first."""
    email = Email(sender=message.sender or "", subject=message.subject, body=message.text)
    t = await ctx.llm(prompt="triage", input=email, output=Triage, temperature=0)
    if t.category == "spam" or t.urgency == "low":
        return {"category": t.category, "action": "filed"}
    draft = await ctx.llm(prompt="reply", input={"email": email, "triage": t}, temperature=0)
    decision = await ctx.approve("send reply", preview=draft, risk="high", timeout="1d", on_timeout="reject")
    if not decision.approved:
        return {"category": t.category, "action": f"reply {decision.status}"}
    body = decision.edited if isinstance(decision.edited, str) else draft
    # Approved just above, so the send itself is a plain irreversible step rather than a second ask.
    if "outbox" in app.settings.sections.get("connectors", {}):
        await ctx.connector("outbox").call("send", to=[email.sender], text=body, reply_to=message)
    else:  # no mail server configured: the reply goes to the file outbox
        await ctx.step(send_email.fn, email.sender, f"Re: {email.subject}", body, effect="irreversible")
    return {"category": t.category, "action": "replied"}


@app.workflow(budget="$0.20/run")
async def lead_followup(ctx: Context, lead: Lead) -> dict[str, str]:
    """Read the lead's contact from the CRM, draft a follow-up, and send it once the operator approves
    (or edits) it; the CRM gets a note of what was sent."""
    crm = ctx.connector("crm")
    contact: Contact = await crm.call(GET_CONTACT, id=lead.contact_id)
    if not contact.email:
        return {"lead": lead.contact_id, "action": "no email in the CRM"}
    about = {**lead.model_dump(), "name": contact.name or contact.email, "company": contact.company or "-"}
    draft = await ctx.llm(prompt="followup", input={"lead": about}, temperature=0)
    decision = await ctx.approve(f"send follow-up to {about['name']}", preview=draft, timeout="3d")
    if not decision.approved:
        return {"lead": contact.email, "action": decision.status}
    body = decision.edited if isinstance(decision.edited, str) else draft
    subject = f"Following up on {lead.interest}"
    await ctx.step(send_email.fn, contact.email, subject, body, effect="irreversible")
    await crm.call(ADD_NOTE, contact_id=contact.source_id or lead.contact_id, text=f"Sent: {subject}")
    return {"lead": contact.email, "action": "sent"}


@app.workflow(budget="$0.30/run", on_budget="fail")
async def summarize_ticket(ctx: Context, ticket: Ticket) -> TicketSummary:
    """Summarise with the cheap tier; a summary that fails validation escalates to the strong tier."""
    summary: TicketSummary = await ctx.llm(
        prompt="summarize", input={"ticket": ticket}, output=TicketSummary, escalate=True, temperature=0
    )
    return summary


async def fetch_profile(customer_id: str) -> dict[str, str]:
    # Stands in for a CRM lookup: deterministic, safe to repeat.
    plan = ["starter", "pro", "team"][int(hashlib.sha256(customer_id.encode()).hexdigest(), 16) % 3]
    return {"id": customer_id, "plan": plan}


def send_welcome(email: str, plan: str, idempotency_key: str) -> str:
    return _deliver("welcome", email, f"welcome-{plan}", idempotency_key)


@app.workflow(queue="outbox")
async def onboard(ctx: Context, customer: Customer) -> Summary:
    profile = await ctx.step(fetch_profile, customer.id, effect="read")
    await ctx.step(
        send_welcome,
        customer.email,
        profile["plan"],
        effect="irreversible",
        idempotency_key=f"welcome-{customer.id}",
    )
    activated = True
    try:
        await ctx.wait_for("activated", timeout="2d")
    except WaitTimeout:
        activated = False
    return Summary(customer_id=customer.id, plan=profile["plan"], welcome_sent=True, activated=activated)


@app.workflow(schedule="0 9 * * *")
async def daily_digest(ctx: Context) -> dict[str, int]:
    """Every day at 09:00 UTC: count runs by status."""
    counts: dict[str, int] = await ctx.step(count_runs)
    return counts


async def count_runs() -> dict[str, int]:
    runs = await app.list_runs(limit=1000)
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return out
