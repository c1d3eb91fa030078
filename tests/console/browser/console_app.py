"""The project the browser tests serve with ``crewline serve --app tests.console.browser.console_app:app``.

Model calls go to a scripted model (no network) priced like a hosted one, so the console has costs to
show; ``answer`` drafts a reply with a prompt and asks a person before sending it (the reply is a model, so
a reviewer's edit is validated against it); ``digest`` is a finished run of a few steps to fork from.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from crewline import App, Context
from crewline.models import Gateway, ModelsConfig
from crewline.models.types import ModelRequest
from crewline.testing import ScriptedModel


class Reply(BaseModel):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    subject: str = Field(min_length=1)
    body: str = Field(min_length=1, max_length=2000)


def _draft(request: ModelRequest) -> str:
    found = re.search(r'about "([^"]+)"', request.messages[-1].text)
    topic = found.group(1) if found else "your message"
    return (
        f"Hello, thank you for writing about {topic}. We are looking into it and will reply today. The team"
    )


app = App()
SENT: list[str] = []


@app.workflow()
async def answer(ctx: Context, email: dict[str, str]) -> dict[str, Any]:
    draft = await ctx.llm(prompt="reply", input={"email": email}, max_tokens=200)
    preview = Reply(to=email["sender"], subject=f"Re: {email['subject']}", body=draft)
    decision = await ctx.approve("send reply", preview=preview, risk="high")
    if not decision.approved:
        return {"sent": False, "comment": decision.comment}
    reply: Reply = decision.edited or preview
    await ctx.step(SENT.append, reply.body, name="send", effect="irreversible")
    return {"sent": True, "body": reply.body}


@app.workflow()
async def digest(ctx: Context, topic: str) -> dict[str, Any]:
    items = await ctx.step(lambda: [f"{topic} item {i}" for i in range(3)], name="collect")
    summary = await ctx.llm(messages=f"Summarise: {items}", max_tokens=100, name="summarise")
    await ctx.checkpoint("summarised")
    return {"summary": summary, "items": len(items)}


def _gateway() -> Gateway:
    # Named as a provider so it is priced like a hosted model (a bare test double costs nothing); the
    # address is never called, the scripted model answers in its place.
    provider = {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}
    prices = {"test/scripted": {"input": 300.0, "output": 1500.0}}
    config = ModelsConfig.parse(
        {"default": "test/scripted", "providers": {"test": provider}, "prices": prices}
    )
    model = ScriptedModel(default=_draft)
    return Gateway.for_testing(model, app.db, config=config, on_call=app.observe_call)


app.engine.models = _gateway()
