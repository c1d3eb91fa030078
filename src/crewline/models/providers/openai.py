"""OpenAI chat completions (and embeddings): OpenAI, Groq, DeepSeek, OpenRouter, Together, vLLM, llama.cpp,
Ollama's ``/v1``, and any server speaking the same format at a base URL ending in ``/v1``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ...errors import ContentPolicy, ContextTooLong, ModelError, ProviderUnavailable
from ..types import (
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    StreamChunk,
    TextPart,
    ToolCall,
    Usage,
)
from .base import Adapter, drain, register, sampling

__all__ = ["OpenAIAdapter"]

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


@register("openai")
class OpenAIAdapter(Adapter):
    def classify(self, status: int, body: Any, text: str) -> type[ModelError] | None:
        err = body.get("error") if isinstance(body, dict) else None
        code = str(err.get("code") or "") if isinstance(err, dict) else ""
        if code == "context_length_exceeded":
            return ContextTooLong
        if code == "content_filter" or code == "content_policy_violation":
            return ContentPolicy
        return None

    def body(self, request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
        field = str(self.endpoint.options.get("max_tokens_field", "max_tokens"))
        body.update(sampling(request, max_tokens=field, stop="stop"))
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            if request.tool_choice:
                body["tool_choice"] = _tool_choice(request.tool_choice)
        if request.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": dict(request.response_schema),
                    "strict": False,
                },
            }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(request.extra)
        return body

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        data = await self.post_json("/chat/completions", self.body(request, model, stream=False))
        try:
            choice = data["choices"][0]
            msg = choice["message"]
            calls = tuple(_call(c) for c in msg.get("tool_calls") or ())
            finish = _FINISH.get(choice.get("finish_reason") or "stop", choice.get("finish_reason") or "stop")
            if finish == "content_filter":
                raise ContentPolicy(
                    f"{self.provider}: reply withheld by the content filter", provider=self.provider
                )
            return ModelResponse(
                text=msg.get("content") or "",
                tool_calls=calls,
                finish_reason=finish,
                usage=_usage(data.get("usage")),
                model=str(data.get("model") or model),
                provider=self.provider,
                response_id=data.get("id"),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: reply is missing fields ({type(e).__name__}: {e})", provider=self.provider
            ) from e

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        pending: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage: Usage | None = None
        rid: str | None = None
        events = self.sse("/chat/completions", self.body(request, model, stream=True))
        async for _, data in events:
            if data == "[DONE]":
                await drain(events)
                for call in _flush_calls(pending, self.provider):
                    yield StreamChunk(tool_call=call)
                yield StreamChunk(finish_reason=finish or "stop", usage=usage, response_id=rid)
                return
            chunk = self.decode(data.encode())
            if isinstance(chunk, dict) and "error" in chunk:
                raise self.error(500, data.encode(), {})
            rid = rid or chunk.get("id")
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                for tc in delta.get("tool_calls") or ():
                    slot = pending.setdefault(
                        int(tc.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                    )
                    fn = tc.get("function") or {}
                    slot["id"] = tc.get("id") or slot["id"]
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
                if delta.get("content"):
                    yield StreamChunk(text=delta["content"])
                if choice.get("finish_reason"):
                    finish = _FINISH.get(choice["finish_reason"], choice["finish_reason"])
        raise self.cut_off("[DONE]")

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        data = await self.post_json(
            "/embeddings", {"model": model, "input": list(texts), "encoding_format": "float"}
        )
        vectors = self.vectors(
            texts,
            lambda: [
                [float(x) for x in r["embedding"]]
                for r in sorted(data["data"], key=lambda r: r.get("index", 0))
            ],
        )
        try:
            tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (AttributeError, TypeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: malformed usage in reply: {e}", provider=self.provider
            ) from e
        return EmbeddingResponse(
            vectors, str(data.get("model") or model), self.provider, Usage(input_tokens=tokens)
        )


def _tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, str) or all(isinstance(p, TextPart) for p in m.content):
        out["content"] = m.text
    else:
        out["content"] = [_part(p) for p in m.content]
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
        if not out["content"]:
            out["content"] = None
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    return {"type": "image_url", "image_url": {"url": p.data_url()}}


def _call(c: Mapping[str, Any]) -> ToolCall:
    fn = c["function"]
    args = fn.get("arguments") or "{}"
    parsed = json.loads(args) if isinstance(args, str) else args
    if not isinstance(parsed, dict):
        raise ValueError(f"tool call arguments are not a JSON object: {args!r:.80}")
    return ToolCall(str(c.get("id") or ""), str(fn["name"]), parsed)


def _flush_calls(pending: dict[int, dict[str, str]], provider: str) -> list[ToolCall]:
    out = []
    for _, slot in sorted(pending.items()):
        try:
            out.append(
                _call({"id": slot["id"], "function": {"name": slot["name"], "arguments": slot["arguments"]}})
            )
        except ValueError as e:
            raise ProviderUnavailable(
                f"{provider}: streamed tool call is not valid JSON: {e}", provider=provider
            ) from e
    pending.clear()
    return out


def _usage(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    prompt = u.get("prompt_tokens_details") or {}
    completion = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt.get("cached_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
    )
