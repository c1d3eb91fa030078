"""Anthropic-compatible route: ``/v1/messages`` (plain, streaming, tools) in Anthropic's JSON, SSE events
and error shapes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import InvalidInput
from ...models.calls import CompletionRequest
from ...models.types import ImagePart, Message, ModelResponse, Part, StreamChunk, TextPart, ToolCall, Usage
from ._common import Failure, classify, guarded, open_call

__all__ = ["router"]

router = APIRouter(prefix="/v1")

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "quota": "rate_limit_error",
    "timeout": "api_error",
    "upstream": "api_error",
    "unavailable": "api_error",
    "internal": "api_error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _error_json(failure: Failure) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(failure.kind, "api_error"), "message": failure.message},
    }


def _render(failure: Failure) -> JSONResponse:
    return JSONResponse(_error_json(failure), status_code=failure.status, headers=failure.headers)


# -- request -----------------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    raise InvalidInput(f"{where} must be a string or an array of text blocks")


def _part(block: dict[str, Any], where: str) -> Part:
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return TextPart(block["text"])
    source = block.get("source")
    if block.get("type") == "image" and isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return ImagePart(data=source["data"], media_type=str(source.get("media_type", "image/png")))
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return ImagePart(url=source["url"])
    raise InvalidInput(f"{where}: unsupported content block of type {block.get('type')!r}")


def _turn(i: int, m: Any, names: dict[str, str]) -> list[Message]:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
        raise InvalidInput(f"{where} must be an object with role 'user' or 'assistant'")
    content = m.get("content")
    if isinstance(content, str):
        return [Message(m["role"], content)]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise InvalidInput(f"{where}.content must be a string or an array of content blocks")
    out: list[Message] = []
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "tool_use" and m["role"] == "assistant":
            if not isinstance(block.get("name"), str) or not isinstance(block.get("input", {}), dict):
                raise InvalidInput(f"{where}.content[{j}]: tool_use needs a name and an input object")
            call_id = str(block.get("id") or f"toolu_{uuid.uuid4().hex[:20]}")
            names[call_id] = block["name"]
            calls.append(ToolCall(call_id, block["name"], dict(block.get("input") or {})))
        elif kind == "tool_result" and m["role"] == "user":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidInput(f"{where}.content[{j}]: tool_result needs tool_use_id")
            text = _text_of(block.get("content", ""), f"{where}.content[{j}].content")
            out.append(Message("tool", text, tool_call_id=call_id, name=names.get(call_id)))
        else:
            parts.append(_part(block, f"{where}.content[{j}]"))
    if parts or calls:
        out.append(Message(m["role"], tuple(parts), tuple(calls)))
    return out


def _messages_request(body: dict[str, Any]) -> CompletionRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model: field required (a string)")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 10_000_000:
        raise InvalidInput("max_tokens: field required (a positive integer)")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("messages: field required (a non-empty array)")
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        messages.append(Message("system", _text_of(system, "system")))
    names: dict[str, str] = {}
    for i, m in enumerate(raw):
        messages.extend(_turn(i, m, names))
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise InvalidInput("tools must be an array of {name, description, input_schema}")
        kwargs["tools"] = [
            {
                "name": t.get("name"),
                "description": t.get("description") or "",
                "parameters": t.get("input_schema") or {"type": "object"},
            }
            for t in tools
        ]
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
        if kind == "tool" and isinstance(choice.get("name"), str):
            mapped = choice["name"]
        if mapped is None:
            raise InvalidInput("tool_choice must be {type: auto|any|none} or {type: tool, name}")
        kwargs["tool_choice"] = mapped
    for name, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidInput(f"{name}: must be a number from {low} to {high}")
            kwargs[name] = float(value)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidInput("stop_sequences: must be an array of strings")
        kwargs["stop"] = stops
    return CompletionRequest(**kwargs)


# -- response ----------------------------------------------------------------------------------------------


def _message(reply: ModelResponse, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id or f"toolu_{uuid.uuid4().hex[:20]}",
                "name": call.name,
                "input": call.arguments,
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.usage.input_tokens, "output_tokens": reply.usage.output_tokens},
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _message_start(model: str) -> bytes:
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return _event("message_start", {"message": message})


def _tool_use(index: int, call: ToolCall) -> list[bytes]:
    """A whole tool_use block: start, its arguments as one JSON delta, stop."""
    block = {
        "type": "tool_use",
        "id": call.id or f"toolu_{uuid.uuid4().hex[:20]}",
        "name": call.name,
        "input": {},
    }
    delta = {"type": "input_json_delta", "partial_json": json.dumps(call.arguments)}
    return [
        _event("content_block_start", {"index": index, "content_block": block}),
        _event("content_block_delta", {"index": index, "delta": delta}),
        _event("content_block_stop", {"index": index}),
    ]


async def _events(first: StreamChunk, rest: AsyncIterator[StreamChunk], model: str) -> AsyncIterator[bytes]:
    yield _message_start(model)
    index = -1
    text_open = False
    usage: Usage | None = None
    stop = "end_turn"
    item: StreamChunk | None = first
    try:
        while item is not None:
            if item.text:
                if not text_open:
                    index += 1
                    text_open = True
                    yield _event(
                        "content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}
                    )
                yield _event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": item.text}},
                )
            if item.tool_call is not None:
                if text_open:
                    yield _event("content_block_stop", {"index": index})
                    text_open = False
                index += 1
                for event in _tool_use(index, item.tool_call):
                    yield event
            if item.finish_reason is not None:
                stop = _STOP.get(item.finish_reason, "end_turn")
            if item.usage is not None:
                usage = item.usage
            item = await anext(rest, None)
    except Exception as e:  # after the first byte: report inside the stream, never a silent cut
        yield _event("error", _error_json(classify(e)))
        return
    if text_open:
        yield _event("content_block_stop", {"index": index})
    yield _event(
        "message_delta",
        {
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": (usage or Usage()).output_tokens},
        },
    )
    yield _event("message_stop", {})


@router.post("/messages")
@guarded(_render)
async def messages(request: Request) -> Any:
    call = await open_call(request)
    asked = _messages_request(call.body)
    model = asked.model or ""
    call.check_model(model)
    if not call.body.get("stream"):
        reply = await call.gateway.complete(asked, call.options)
        return JSONResponse(_message(reply, model))
    stream = call.gateway.stream(asked, call.options).__aiter__()
    first = await anext(stream)
    return StreamingResponse(
        _events(first, stream, model), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
