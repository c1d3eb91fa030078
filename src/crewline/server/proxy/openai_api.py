"""OpenAI-compatible routes: ``/v1/chat/completions`` (plain, streaming, tools), ``/v1/embeddings``,
``/v1/models``, answering in OpenAI's JSON, SSE and error shapes."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import InvalidInput
from ...models.calls import CompletionRequest
from ...models.capabilities import capabilities
from ...models.types import ModelResponse, StreamChunk, ToolCall, Usage
from ..state import state_of
from ._common import Failure, authenticate, classify, guarded, open_call

__all__ = ["router"]

router = APIRouter(prefix="/v1")

_ERROR_TYPES = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("authentication_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", "model_not_found"),
    "too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
    "quota": ("insufficient_quota", "insufficient_quota"),
    "timeout": ("server_error", "timeout"),
    "upstream": ("server_error", "upstream_error"),
    "unavailable": ("server_error", "service_unavailable"),
    "internal": ("server_error", None),
}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


def _error_json(failure: Failure) -> dict[str, Any]:
    type_, code = _ERROR_TYPES.get(failure.kind, ("server_error", None))
    return {"error": {"message": failure.message, "type": type_, "param": None, "code": code}}


def _render(failure: Failure) -> JSONResponse:
    return JSONResponse(_error_json(failure), status_code=failure.status, headers=failure.headers)


# -- request -----------------------------------------------------------------------------------------------


def _chat_request(body: dict[str, Any]) -> CompletionRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' is required and must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise InvalidInput("'messages' must be a non-empty array of message objects")
    messages = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]
    kwargs: dict[str, Any] = {"model": model, "messages": messages}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidInput("'tools' must be an array of {type: function, function: {...}}")
        kwargs["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (
            (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        )
        if not isinstance(name, str):
            raise InvalidInput("'tool_choice' object must be {type: function, function: {name}}")
        kwargs["tool_choice"] = name
    elif choice is not None:
        if choice not in ("auto", "none", "required"):
            raise InvalidInput("'tool_choice' must be auto, none, required or a function object")
        kwargs["tool_choice"] = choice
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or not 1 <= max_tokens <= 10_000_000
        ):
            raise InvalidInput("'max_tokens' must be a positive integer")
        kwargs["max_tokens"] = max_tokens
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidInput(f"'{name}' must be a number from {low} to {high}")
            kwargs[name] = float(value)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidInput("'stop' must be a string or an array of strings")
        kwargs["stop"] = stops
    return CompletionRequest(**kwargs)


# -- response ----------------------------------------------------------------------------------------------


def _call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }
    if index is not None:
        out["index"] = index
    return out


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _completion(reply: ModelResponse, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or (None if reply.tool_calls else ""),
    }
    if reply.tool_calls:
        message["tool_calls"] = [_call_json(c) for c in reply.tool_calls]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(reply.finish_reason, "stop"),
            }
        ],
        "usage": _usage(reply.usage),
    }


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def _chunks(
    first: StreamChunk, rest: AsyncIterator[StreamChunk], model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        )

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    usage: Usage | None = None
    finish = "stop"
    item: StreamChunk | None = first
    try:
        while item is not None:
            if item.text:
                yield chunk({"content": item.text})
            if item.tool_call is not None:
                yield chunk({"tool_calls": [_call_json(item.tool_call, calls)]})
                calls += 1
            if item.finish_reason is not None:
                finish = _FINISH.get(item.finish_reason, "stop")
            if item.usage is not None:
                usage = item.usage
            item = await anext(rest, None)
    except Exception as e:  # after the first byte: report inside the stream, never a silent cut
        yield _sse(_error_json(classify(e)))
        return
    yield chunk({}, finish)
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _usage(usage or Usage())})
    yield b"data: [DONE]\n\n"


# -- routes ------------------------------------------------------------------------------------------------


@router.post("/chat/completions")
@guarded(_render)
async def chat_completions(request: Request) -> Any:
    call = await open_call(request)
    asked = _chat_request(call.body)
    model = asked.model or ""
    call.check_model(model)
    if not call.body.get("stream"):
        reply = await call.gateway.complete(asked, call.options)
        return JSONResponse(_completion(reply, model))
    options = call.body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    stream = call.gateway.stream(asked, call.options).__aiter__()
    first = await anext(stream)  # errors before the first chunk still get a proper status
    return StreamingResponse(
        _chunks(first, stream, model, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


@router.post("/embeddings")
@guarded(_render)
async def embeddings(request: Request) -> Any:
    call = await open_call(request)
    model, texts = call.body.get("model"), call.body.get("input")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' is required and must be a string")
    call.check_model(model)
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise InvalidInput("'input' must be a string or a non-empty array of strings")
    as_base64 = call.body.get("encoding_format") == "base64"
    reply = await call.gateway.embed(items, model, call.options)
    data = [
        {"object": "embedding", "index": i, "embedding": _b64(v) if as_base64 else v}
        for i, v in enumerate(reply.vectors)
    ]
    usage = {"prompt_tokens": reply.usage.input_tokens, "total_tokens": reply.usage.input_tokens}
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.get("/models")
@guarded(_render)
async def models(request: Request) -> Any:
    await authenticate(request)
    gateway = state_of(request).app.models
    config = gateway.config
    names = gateway.offered()
    created = int(time.time())
    data = [
        {
            "id": n,
            "object": "model",
            "created": created,
            "owned_by": "crewline",
            "capabilities": capabilities(config, gateway.router.resolve(n)),
        }
        for n in names
    ]
    return JSONResponse({"object": "list", "data": data})
