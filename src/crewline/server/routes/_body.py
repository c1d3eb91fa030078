"""What request bodies share: the base of every body model, and reading a raw body up to a limit.

A field the body model does not know is refused and named in the 422, never silently dropped (a
misspelled ``inptu`` would otherwise start a run with no input). Signed callbacks (webhooks, Slack) read
their raw bytes with :func:`read_body`, since the signature covers the bytes as sent.
"""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from ..errors import BodyTooLarge

__all__ = ["RequestBody", "read_body"]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
