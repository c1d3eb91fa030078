"""Structured output: a Pydantic model's JSON schema out, a validated instance back.

The schema is built before anything is sent, so a model that cannot be expressed as JSON schema is a clear
:class:`InvalidInput`. Providers with a native JSON-schema mode get the schema that way; others get it in a
system instruction (prompted JSON). Replies are parsed leniently (a JSON object inside a code fence or
surrounded by prose is found) and then validated strictly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pydantic

from ..errors import InvalidInput
from .types import Message, ModelRequest

__all__ = ["parse_output", "prompted", "reask_messages", "schema_for"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def schema_for(output: type[Any]) -> tuple[pydantic.TypeAdapter[Any], dict[str, Any], str]:
    """``(adapter, schema, name)`` for an output type; :class:`InvalidInput` if it has no JSON schema."""
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output)
        schema = adapter.json_schema()
    except (
        pydantic.PydanticSchemaGenerationError,
        pydantic.errors.PydanticInvalidForJsonSchema,
        pydantic.PydanticUserError,
        TypeError,
    ) as e:
        raise InvalidInput(f"output={output!r} cannot be expressed as JSON schema: {e}") from e
    name = re.sub(r"[^A-Za-z0-9_-]", "_", getattr(output, "__name__", "output"))[:64] or "output"
    if schema.get("type") != "object":
        raise InvalidInput(
            f"output={output!r} must be an object type (a Pydantic model or TypedDict), not {schema.get('type')!r}"
        )
    return adapter, schema, name


def prompted(request: ModelRequest) -> ModelRequest:
    """The request with its schema moved into a system instruction, for providers without a JSON mode."""
    assert request.response_schema is not None
    instruction = (
        "Reply with only a JSON object, no prose and no code fence, that matches this JSON schema:\n"
        + json.dumps(request.response_schema)
    )
    return request.with_(messages=(Message("system", instruction), *request.messages), response_schema=None)


def parse_output(adapter: pydantic.TypeAdapter[Any], text: str) -> Any:
    """The validated instance; raises ``ValueError`` / ``pydantic.ValidationError`` on a bad reply."""
    candidate = text.strip()
    fenced = _FENCE.search(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    elif not candidate.startswith("{"):
        start, end = candidate.find("{"), candidate.rfind("}")
        if start != -1 and end > start:
            candidate = candidate[start : end + 1]
    return adapter.validate_json(candidate)


def reask_messages(reply_text: str, error: Exception) -> tuple[Message, Message]:
    if isinstance(error, pydantic.ValidationError):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
    else:
        detail = str(error)
    return (
        Message("assistant", reply_text),
        Message(
            "user", f"That reply was not valid: {detail}. Reply again with only the corrected JSON object."
        ),
    )


def describe(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema)[:200]
