"""Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` and ``batchEmbedContents``.

The base URL is the API root (``https://generativelanguage.googleapis.com/v1beta``); the key travels in the
``x-goog-api-key`` header, never in the URL (URLs end up in logs).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ...errors import AuthError, BadRequest, ContentPolicy, ModelError, ProviderUnavailable, RateLimited
from ..types import (
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    StreamChunk,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)
from .base import Adapter, register, sampling

__all__ = ["GeminiAdapter"]

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
}
_STATUS: dict[str, type[ModelError]] = {
    "RESOURCE_EXHAUSTED": RateLimited,
    "UNAUTHENTICATED": AuthError,
    "PERMISSION_DENIED": AuthError,
    "UNAVAILABLE": ProviderUnavailable,
    "INTERNAL": ProviderUnavailable,
    "NOT_FOUND": BadRequest,
}


@register("gemini")
class GeminiAdapter(Adapter):
    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.endpoint.api_key} if self.endpoint.api_key else {}

    def error(self, status: int, content: bytes, headers: Mapping[str, str]) -> ModelError:
        err = super().error(status, content, headers)
        if isinstance(err, RateLimited) and err.retry_after is None:
            err.retry_after = _retry_delay(content)
        return err

    def classify(self, status: int, body: Any, text: str) -> type[ModelError] | None:
        err = body.get("error") if isinstance(body, dict) else None
        return _STATUS.get(str(err.get("status"))) if isinstance(err, dict) else None

    def body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"contents": _contents(request.messages)}
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config = sampling(request, max_tokens="maxOutputTokens", top_p="topP", stop="stopSequences")
        if request.response_schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = dict(request.response_schema)
        if config:
            body["generationConfig"] = config
        if request.tools:
            body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
            if request.tool_choice:
                body["toolConfig"] = {"functionCallingConfig": _tool_choice(request.tool_choice)}
        body.update(request.extra)
        return body

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        data = await self.post_json(f"/models/{model}:generateContent", self.body(request))
        text, calls, finish = self._parts(data)
        return ModelResponse(
            text=text,
            tool_calls=tuple(calls),
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            usage=_usage(data.get("usageMetadata")),
            model=str(data.get("modelVersion") or model),
            provider=self.provider,
            response_id=data.get("responseId"),
        )

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        usage, finish, saw_calls, rid = Usage(), None, False, None
        async for _, data in self.sse(
            f"/models/{model}:streamGenerateContent", self.body(request), {"alt": "sse"}
        ):
            chunk = self.decode(data.encode())
            if isinstance(chunk, dict) and "error" in chunk:
                raise self.error(500, data.encode(), {})
            rid = rid or chunk.get("responseId")
            if chunk.get("usageMetadata"):
                usage = _usage(chunk["usageMetadata"])
            text, calls, reason = self._parts(chunk, partial=True)
            if text:
                yield StreamChunk(text=text)
            for call in calls:
                saw_calls = True
                yield StreamChunk(tool_call=call)
            if reason is not None:
                finish = reason
        if finish is None:
            raise self.cut_off("a finishReason")
        yield StreamChunk(
            finish_reason="tool_calls" if saw_calls and finish == "stop" else finish,
            usage=usage,
            response_id=rid,
        )

    def _parts(self, data: Mapping[str, Any], partial: bool = False) -> tuple[str, list[ToolCall], Any]:
        try:
            candidates = data.get("candidates") or []
            if not candidates:
                feedback = data.get("promptFeedback") or {}
                if feedback.get("blockReason"):
                    raise ContentPolicy(
                        f"{self.provider}: prompt blocked ({feedback['blockReason']})", provider=self.provider
                    )
                if partial:
                    return "", [], None
                raise KeyError("candidates")
            cand = candidates[0]
            reason = cand.get("finishReason")
            finish = _FINISH.get(reason, "stop") if reason else (None if partial else "stop")
            if finish == "content_filter":
                raise ContentPolicy(f"{self.provider}: reply blocked ({reason})", provider=self.provider)
            text, calls = [], []
            for i, part in enumerate((cand.get("content") or {}).get("parts") or ()):
                if "text" in part and not part.get("thought"):
                    text.append(part["text"])
                elif "functionCall" in part:
                    fc = part["functionCall"]
                    calls.append(
                        ToolCall(
                            str(fc.get("id") or f"call_{i}"), str(fc["name"]), dict(fc.get("args") or {})
                        )
                    )
            return "".join(text), calls, finish
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: reply is missing fields ({type(e).__name__}: {e})", provider=self.provider
            ) from e

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        body = {
            "requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}} for t in texts]
        }
        data = await self.post_json(f"/models/{model}:batchEmbedContents", body)
        vectors = self.vectors(texts, lambda: [[float(x) for x in e["values"]] for e in data["embeddings"]])
        return EmbeddingResponse(vectors, model, self.provider, Usage())


def _retry_delay(content: bytes) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "30s"``) of an error body."""
    try:
        details = json.loads(content)["error"].get("details") or []
        for d in details:
            if str(d.get("@type", "")).endswith("RetryInfo") and str(d.get("retryDelay", "")).endswith("s"):
                return float(d["retryDelay"][:-1])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def _declaration(tool: Tool) -> dict[str, Any]:
    """A function declaration; schemas using references go as full JSON Schema, the rest in the
    OpenAPI subset that ``parameters`` takes."""
    schema = dict(tool.parameters)
    key = "parametersJsonSchema" if "$ref" in json.dumps(schema) or "$defs" in schema else "parameters"
    return {"name": tool.name, "description": tool.description, key: schema}


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"mode": choice.upper()}
    if choice == "required":
        return {"mode": "ANY"}
    return {"mode": "ANY", "allowedFunctionNames": [choice]}


def _contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "model" if m.role == "assistant" else "user"
        parts = _parts_of(m)
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _parts_of(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        try:
            result = json.loads(m.text)
        except ValueError:
            result = m.text
        response = result if isinstance(result, dict) else {"result": result}
        return [{"functionResponse": {"name": m.name or "tool", "response": response}}]
    parts: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            parts.append({"text": p.text})
        elif isinstance(p, ImagePart):
            if p.data is not None:
                parts.append({"inlineData": {"mimeType": p.media_type, "data": p.data}})
            else:
                parts.append({"fileData": {"mimeType": p.media_type, "fileUri": p.url}})
    parts.extend({"functionCall": {"name": c.name, "args": c.arguments}} for c in m.tool_calls)
    return parts


def _usage(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    # Gemini counts thinking apart from the candidates; the canonical output count includes it.
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )
