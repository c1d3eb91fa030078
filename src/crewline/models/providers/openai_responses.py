"""OpenAI's Responses API (``POST /v1/responses``), plain and streamed (named server-sent events).

Use it with ``format = "openai-responses"`` on a provider; it shares error mapping and embeddings with
the chat-completions adapter. Requests are sent with ``store: false``: crewline keeps its own record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ...errors import ContentPolicy, ProviderUnavailable
from ..types import ImagePart, Message, ModelRequest, ModelResponse, StreamChunk, TextPart, ToolCall, Usage
from .base import drain, register, sampling
from .openai import OpenAIAdapter

__all__ = ["OpenAIResponsesAdapter"]


@register("openai-responses")
class OpenAIResponsesAdapter(OpenAIAdapter):
    def body(self, request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": _items(request.messages), "store": False}
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        if system:
            body["instructions"] = system
        body.update(sampling(request, max_tokens="max_output_tokens", stop=None))  # Responses has no stop
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                }
                for t in request.tools
            ]
            if request.tool_choice:
                choice = request.tool_choice
                body["tool_choice"] = (
                    choice if choice in ("auto", "none", "required") else {"type": "function", "name": choice}
                )
        if request.response_schema is not None:
            fmt = {
                "type": "json_schema",
                "name": request.schema_name,
                "schema": dict(request.response_schema),
            }
            body["text"] = {"format": {**fmt, "strict": False}}
        if stream:
            body["stream"] = True
        body.update(request.extra)
        return body

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        data = await self.post_json("/responses", self.body(request, model, stream=False))
        return self._response(data, model)

    def _response(self, data: Mapping[str, Any], model: str) -> ModelResponse:
        try:
            text: list[str] = []
            calls: list[ToolCall] = []
            for item in data["output"]:
                if item.get("type") == "message":
                    text += [c["text"] for c in item.get("content") or () if c.get("type") == "output_text"]
                elif item.get("type") == "function_call":
                    calls.append(_call(item))
            finish = self._finish(data, calls)
            return ModelResponse(
                text="".join(text),
                tool_calls=tuple(calls),
                finish_reason=finish,
                usage=_usage(data.get("usage")),
                model=str(data.get("model") or model),
                provider=self.provider,
                response_id=data.get("id"),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: reply is missing fields ({type(e).__name__}: {e})", provider=self.provider
            ) from e

    def _finish(self, data: Mapping[str, Any], calls: list[ToolCall]) -> str:
        if data.get("status") == "incomplete":
            reason = (data.get("incomplete_details") or {}).get("reason")
            if reason == "content_filter":
                raise ContentPolicy(
                    f"{self.provider}: reply withheld by the content filter", provider=self.provider
                )
            return "length"
        if data.get("status") == "failed":
            message = (data.get("error") or {}).get("message", "response failed")
            raise ProviderUnavailable(f"{self.provider}: {message}", provider=self.provider)
        return "tool_calls" if calls else "stop"

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        events = self.sse("/responses", self.body(request, model, stream=True))
        async for event, data in events:
            payload = self.decode(data.encode())
            kind = payload.get("type", event)
            if kind == "response.output_text.delta":
                yield StreamChunk(text=str(payload.get("delta", "")))
            elif (
                kind == "response.output_item.done"
                and (payload.get("item") or {}).get("type") == "function_call"
            ):
                yield StreamChunk(tool_call=_call(payload["item"]))
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                final = self._response(payload["response"], model)
                await drain(events)
                yield StreamChunk(
                    finish_reason=final.finish_reason, usage=final.usage, response_id=final.response_id
                )
                return
            elif kind == "error":
                raise self.error(500, json.dumps({"error": payload}).encode(), {})
        raise self.cut_off("response.completed")


def _items(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
            continue
        if m.role == "assistant":
            if m.text:
                items.append({"role": "assistant", "content": m.text})
            items += [
                {
                    "type": "function_call",
                    "call_id": c.id,
                    "name": c.name,
                    "arguments": json.dumps(c.arguments),
                }
                for c in m.tool_calls
            ]
            continue
        items.append({"role": "user", "content": [_part(p) for p in m.parts]})
    return items


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "input_text", "text": p.text}
    return {"type": "input_image", "image_url": p.data_url()}


def _call(item: Mapping[str, Any]) -> ToolCall:
    args = json.loads(item.get("arguments") or "{}")
    if not isinstance(args, dict):
        raise ValueError(f"function call arguments are not a JSON object: {item.get('arguments')!r:.80}")
    return ToolCall(str(item.get("call_id") or item.get("id") or ""), str(item["name"]), args)


def _usage(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )
