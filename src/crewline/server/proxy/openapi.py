"""The proxy routes as OpenAPI paths: they read their own bodies, so FastAPI cannot infer them.

Bodies are described by their main fields only, and left open (``additionalProperties``): the wire formats
are OpenAI's and Anthropic's own, documented by them, and every field they define is passed on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["proxy_paths"]

# The scheme names FastAPI gives the API's own key schemes (server/auth.py): a proxy key goes the same way.
_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
_MESSAGES = {"type": "array", "items": {"type": "object"}, "minItems": 1}
_MODEL = {"type": "string", "description": "An alias, tier or provider/model of [models]"}


def _body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties, "additionalProperties": True}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(summary: str, description: str, body: dict[str, Any] | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["model proxy"],
        "summary": summary,
        "description": description,
        "security": _SECURITY,
        "responses": {
            "200": {"description": "The reply, in the protocol's own shape (server-sent events if streamed)"},
            "400": {"description": "Malformed request, or an operation the model cannot do"},
            "401": {"description": "No valid key"},
            "403": {"description": "The key's scope may not send model traffic (it needs proxy or admin)"},
            "404": {"description": "Unknown model"},
            "413": {"description": "The body is over the proxy's size limit"},
            "429": {"description": "Rate limited, or the key's budget is spent"},
            "502": {"description": "The upstream provider failed"},
            "503": {"description": "The database or the upstream provider is unavailable"},
            "504": {"description": "The upstream provider timed out"},
        },
    }
    if body is not None:
        op["requestBody"] = body
    return op


def proxy_paths() -> dict[str, Any]:
    """``paths`` entries for ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``, ``/v1/messages``."""
    chat = _body(
        ["model", "messages"],
        {
            "model": _MODEL,
            "messages": _MESSAGES,
            "stream": {"type": "boolean"},
            "max_tokens": {"type": "integer"},
            "tools": {"type": "array"},
        },
    )
    embed = _body(
        ["model", "input"],
        {
            "model": _MODEL,
            "input": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        },
    )
    messages = _body(
        ["model", "messages", "max_tokens"],
        {
            "model": _MODEL,
            "messages": _MESSAGES,
            "max_tokens": {"type": "integer"},
            "stream": {"type": "boolean"},
            "system": {},
        },
    )
    return {
        "/v1/chat/completions": {
            "post": _operation(
                "OpenAI-compatible chat completion",
                "Plain, streaming and tool calls, through the gateway.",
                chat,
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "OpenAI-compatible embeddings",
                "Models whose capabilities list embeddings (see /v1/models).",
                embed,
            )
        },
        "/v1/models": {
            "get": _operation(
                "The model names the proxy accepts", "Each with its capabilities: chat, embeddings.", None
            )
        },
        "/v1/messages": {
            "post": _operation(
                "Anthropic-compatible messages",
                "Plain, streaming and tool use, through the gateway.",
                messages,
            )
        },
    }
