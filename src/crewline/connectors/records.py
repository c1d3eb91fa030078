"""Canonical records: the shapes workflows are written against, whichever system a record came from.

A CRM's contact JSON, an IMAP message and a billing API's invoice are mapped into these at the connector's
edge (``email_message.py`` for mail, :class:`~crewline.connectors.http.FieldMap` for HTTP APIs), so a
workflow that reads a :class:`Contact` does not change when the CRM does. Each record keeps the source's
own id (``source_id``) and which connector it came from (``source``); ``extra`` holds the fields the
mapping was not told about, so nothing read is lost. Records are frozen Pydantic models: they travel
through the step journal as JSON and come back on replay as the same type.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic

__all__ = [
    "Attachment",
    "Company",
    "Contact",
    "Deal",
    "Invoice",
    "Message",
    "Record",
    "Thread",
    "Ticket",
]


class Record(pydantic.BaseModel):
    """What every record shares: where it came from and what the mapping did not place."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    source: str | None = None  # the connector it was read through
    source_id: str | None = None  # its id in that system
    extra: dict[str, Any] = pydantic.Field(default_factory=dict)


class Company(Record):
    name: str
    domain: str | None = None
    industry: str | None = None
    size: int | None = None


class Contact(Record):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    title: str | None = None
    owner: str | None = None
    tags: list[str] = pydantic.Field(default_factory=list)
    updated_at: dt.datetime | None = None


class Attachment(pydantic.BaseModel):
    """An attachment stored as a blob: the message carries its reference, never its bytes."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int = 0
    blob: str | None = None  # the content-addressed blob's digest (store/payloads.py)


class Message(Record):
    """An email (or a chat message): the RFC 5322 identity and threading, the parties, the text."""

    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = pydantic.Field(default_factory=list)
    sender: str | None = None
    to: list[str] = pydantic.Field(default_factory=list)
    cc: list[str] = pydantic.Field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str | None = None
    attachments: list[Attachment] = pydantic.Field(default_factory=list)
    received_at: dt.datetime | None = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)  # a kept subset, e.g. List-Id


class Thread(Record):
    subject: str = ""
    participants: list[str] = pydantic.Field(default_factory=list)
    messages: list[Message] = pydantic.Field(default_factory=list)


class Ticket(Record):
    title: str
    status: str = "open"
    priority: str | None = None
    requester: str | None = None
    assignee: str | None = None
    description: str = ""
    created_at: dt.datetime | None = None


class Deal(Record):
    title: str
    stage: str | None = None
    amount: float | None = None
    currency: str | None = None
    contact: str | None = None
    company: str | None = None
    close_date: dt.date | None = None


class Invoice(Record):
    number: str | None = None
    customer: str | None = None
    status: str = "draft"
    amount_due: float = 0.0
    currency: str = "USD"
    due_date: dt.date | None = None
    lines: list[dict[str, Any]] = pydantic.Field(default_factory=list)
