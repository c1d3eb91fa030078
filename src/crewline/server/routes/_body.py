"""The base of every request body model: a field the model does not know is refused and named in the
422, never silently dropped (a misspelled ``inptu`` would otherwise start a run with no input)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["RequestBody"]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
