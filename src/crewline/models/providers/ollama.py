"""Ollama's native API: ``POST /api/chat`` (newline-delimited JSON when streamed) and ``POST /api/embed``.

The base URL is the server root (``http://127.0.0.1:11434``). Ollama streams unless told not to, so
every request says ``stream`` explicitly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ...errors import ProviderUnavailable
from ..types import (
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    StreamChunk,
    ToolCall,
    Usage,
)
from .base import Adapter, drain, register, sampling

__all__ = ["OllamaAdapter"]


@register("ollama")
class OllamaAdapter(Adapter):
    def body(self, request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in request.messages],
            "stream": stream,
        }
        options = sampling(request, max_tokens="num_predict", stop="stop")
        if options:
            body["options"] = options
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.response_schema is not None:
            body["format"] = dict(request.response_schema)
        body.update(request.extra)
        return body

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        data = await self.post_json("/api/chat", self.body(request, model, stream=False))
        if isinstance(data, dict) and data.get("error"):
            raise self.error(500, json.dumps(data).encode(), {})
        try:
            msg = data["message"]
            calls = tuple(_calls(msg))
            return ModelResponse(
                text=msg.get("content") or "",
                tool_calls=calls,
                finish_reason=_finish(data, calls),
                usage=_usage(data),
                model=str(data.get("model") or model),
                provider=self.provider,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: reply is missing fields ({type(e).__name__}: {e})", provider=self.provider
            ) from e

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        saw_calls = False
        lines = self.stream_lines("/api/chat", self.body(request, model, stream=True))
        async for line in lines:
            if not line.strip():
                continue
            data = self.decode(line.encode())
            if data.get("error"):
                raise self.error(500, line.encode(), {})
            msg = data.get("message") or {}
            if msg.get("content"):
                yield StreamChunk(text=msg["content"])
            for call in _calls(msg):
                saw_calls = True
                yield StreamChunk(tool_call=call)
            if data.get("done"):
                await drain(lines)
                finish = "tool_calls" if saw_calls else _finish(data, ())
                yield StreamChunk(finish_reason=finish, usage=_usage(data))
                return
        raise self.cut_off('a "done": true line')

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        data = await self.post_json("/api/embed", {"model": model, "input": list(texts)})
        vectors = self.vectors(texts, lambda: [[float(x) for x in v] for v in data["embeddings"]])
        return EmbeddingResponse(
            vectors, model, self.provider, Usage(input_tokens=int(data.get("prompt_eval_count") or 0))
        )


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    images = [p.data for p in m.parts if isinstance(p, ImagePart) and p.data is not None]
    if images:
        out["images"] = images
    if m.tool_calls:
        out["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
    if m.role == "tool" and m.name:
        out["tool_name"] = m.name
    return out


def _calls(msg: Mapping[str, Any]) -> list[ToolCall]:
    out = []
    for i, c in enumerate(msg.get("tool_calls") or ()):
        fn = c["function"]
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args)
        out.append(ToolCall(str(c.get("id") or f"call_{i}"), str(fn["name"]), dict(args)))
    return out


def _finish(data: Mapping[str, Any], calls: Sequence[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def _usage(data: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(data.get("prompt_eval_count") or 0), output_tokens=int(data.get("eval_count") or 0)
    )
