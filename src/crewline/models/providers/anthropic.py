"""Anthropic messages API (``POST /v1/messages``), plain and streamed (named server-sent events).

Structured output goes through a forced tool call: the schema becomes the input schema of a tool the
model must call, which Anthropic models follow reliably.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ...errors import (
    AuthError,
    BadRequest,
    ContextTooLong,
    ModelError,
    ProviderUnavailable,
    RateLimited,
)
from ..types import ImagePart, Message, ModelRequest, ModelResponse, StreamChunk, TextPart, ToolCall, Usage
from .base import Adapter, drain, register, sampling

__all__ = ["OUTPUT_TOOL", "AnthropicAdapter"]

OUTPUT_TOOL = "final_output"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERRORS: dict[str, type[ModelError]] = {
    "rate_limit_error": RateLimited,
    "overloaded_error": ProviderUnavailable,
    "api_error": ProviderUnavailable,
    "authentication_error": AuthError,
    "permission_error": AuthError,
    "not_found_error": BadRequest,
    "request_too_large": ContextTooLong,
}


@register("anthropic")
class AnthropicAdapter(Adapter):
    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.endpoint.api_key:
            headers["x-api-key"] = self.endpoint.api_key
        return headers

    def classify(self, status: int, body: Any, text: str) -> type[ModelError] | None:
        err = body.get("error") if isinstance(body, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        if kind == "invalid_request_error":
            return None  # the message decides between bad request, context too long and policy
        return _ERRORS.get(str(kind))

    def body(self, request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": _messages(request.messages),
        }
        if system:
            body["system"] = system
        body.update(sampling(request, max_tokens=None, stop="stop_sequences"))  # max_tokens: required, above
        tools = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
        if request.response_schema is not None:
            tools.append(
                {
                    "name": OUTPUT_TOOL,
                    "description": "Give the final answer.",
                    "input_schema": dict(request.response_schema),
                }
            )
            body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
        elif request.tool_choice and request.tools:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if tools:
            body["tools"] = tools
        if stream:
            body["stream"] = True
        body.update(request.extra)
        return body

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        data = await self.post_json("/v1/messages", self.body(request, model, stream=False))
        try:
            if data.get("type") == "error":
                raise self.error(500, json.dumps(data).encode(), {})
            text, calls = [], []
            for block in data["content"]:
                if block["type"] == "text":
                    text.append(block["text"])
                elif block["type"] == "tool_use":
                    calls.append(ToolCall(str(block["id"]), str(block["name"]), dict(block["input"])))
            return _response(self.provider, model, data, "".join(text), calls, request)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: reply is missing fields ({type(e).__name__}: {e})", provider=self.provider
            ) from e

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        blocks: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish = "stop"
        rid: str | None = None
        events = self.sse("/v1/messages", self.body(request, model, stream=True))
        async for event, data in events:
            payload = self.decode(data.encode())
            kind = payload.get("type", event)
            if kind == "message_start":
                rid = payload["message"].get("id")
                usage.update(payload["message"].get("usage") or {})
            elif kind == "content_block_start":
                blocks[payload["index"]] = {**payload["content_block"], "json": ""}
            elif kind == "content_block_delta":
                delta = payload["delta"]
                if delta.get("type") == "text_delta":
                    yield StreamChunk(text=delta["text"])
                elif delta.get("type") == "input_json_delta":
                    blocks[payload["index"]]["json"] += delta.get("partial_json", "")
            elif kind == "content_block_stop":
                block = blocks.get(payload["index"], {})
                if block.get("type") == "tool_use":
                    call = self._streamed_call(block)
                    if request.response_schema is not None and call.name == OUTPUT_TOOL:
                        yield StreamChunk(text=json.dumps(call.arguments))
                    else:
                        yield StreamChunk(tool_call=call)
            elif kind == "message_delta":
                usage.update(payload.get("usage") or {})
                reason = (payload.get("delta") or {}).get("stop_reason")
                finish = _FINISH.get(reason or "end_turn", reason or "stop")
                if request.response_schema is not None and finish == "tool_calls":
                    finish = "stop"
            elif kind == "message_stop":
                await drain(events)  # the body's end, so the connection is reused rather than closed
                yield StreamChunk(finish_reason=finish, usage=_usage(usage), response_id=rid)
                return
            elif kind == "error":
                raise self.error(500, data.encode(), {})
        raise self.cut_off("message_stop")

    def _streamed_call(self, block: Mapping[str, Any]) -> ToolCall:
        try:
            args = json.loads(block["json"] or "{}")
        except ValueError as e:
            raise ProviderUnavailable(
                f"{self.provider}: streamed tool input is not JSON: {e}", provider=self.provider
            ) from e
        return ToolCall(str(block.get("id", "")), str(block.get("name", "")), args)


def _response(
    provider: str,
    model: str,
    data: Mapping[str, Any],
    text: str,
    calls: list[ToolCall],
    request: ModelRequest,
) -> ModelResponse:
    reason = data.get("stop_reason") or "end_turn"
    if request.response_schema is not None:
        text, calls, reason = _lift_output(text, calls, reason)
    return ModelResponse(
        text=text,
        tool_calls=tuple(calls),
        finish_reason=_FINISH.get(reason, reason),
        usage=_usage(data.get("usage") or {}),
        model=str(data.get("model") or model),
        provider=provider,
        response_id=data.get("id"),
    )


def _lift_output(text: str, calls: list[ToolCall], reason: str) -> tuple[str, list[ToolCall], str]:
    """The forced output tool's input becomes the reply's text, as JSON."""
    for call in calls:
        if call.name == OUTPUT_TOOL:
            rest = [c for c in calls if c is not call]
            return json.dumps(call.arguments), rest, "end_turn" if reason == "tool_use" else reason
    return text, calls, reason


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    return {"type": "tool", "name": choice}


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Anthropic turns: system lifted out, tool results as user turns, consecutive same-role turns merged."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}]
    blocks: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            blocks.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            source = (
                {"type": "url", "url": p.url}
                if p.url is not None
                else {"type": "base64", "media_type": p.media_type, "data": p.data}
            )
            blocks.append({"type": "image", "source": source})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls
    )
    return blocks


def _usage(u: Mapping[str, Any]) -> Usage:
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    # Anthropic's input_tokens excludes cached tokens; the canonical count includes them.
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + read + write,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
