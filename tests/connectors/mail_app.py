"""A workflow for the process-level SMTP crash test: reply to an email through [connectors.outbox]."""

from __future__ import annotations

from crewline import App, Context
from crewline.connectors.records import Message
from crewline.connectors.smtp import Sent


def register(app: App) -> App:
    @app.workflow()
    async def reply(ctx: Context, msg: Message) -> str:
        outbox = ctx.connector("outbox")
        sent: Sent = await outbox.call("send", to=[msg.sender], text="Sorry: refunded.", reply_to=msg)
        return sent.message_id

    return app


app = register(App())
