"""What the fake provider server says, per wire format: replies, streams, embeddings and error bodies.

Each format is a small class turning a :class:`Reply` into the exact JSON (or SSE / NDJSON events) the real
provider sends, so official SDKs parse it unchanged. The server in :mod:`crewline.testing.fake_server`
picks the format by request path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Reply", "WireFormat", "example_for_schema", "fake_vector", "format_for_path"]


@dataclass
class Reply:
    """One scripted reply: text, tool calls ``(name, arguments)``, or ``json`` (structured output)."""

    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    json: Any = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish: str | None = None  # override the format's finish reason, e.g. "length"


def fake_vector(text: str, dim: int = 8) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = hashlib.sha256(text.encode()).digest() * ((dim * 2) // 32 + 1)
    values = [(int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5) - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def example_for_schema(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> Any:
    """A minimal instance that validates against a JSON schema (what a fake model "answers")."""
    defs = defs if defs is not None else schema.get("$defs", schema.get("definitions", {}))
    if "$ref" in schema:
        return example_for_schema(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}), defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], defs)
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {
            k: example_for_schema(v, defs) for k, v in props.items() if k in schema.get("required", props)
        }
    if kind == "array":
        return [example_for_schema(schema.get("items", {}), defs)] * int(schema.get("minItems", 0))
    simple: dict[str, Any] = {
        "string": "x",
        "integer": int(schema.get("minimum", 0)),
        "number": 0.0,
        "boolean": False,
        "null": None,
    }
    return simple.get(str(kind))


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _pieces(text: str, n: int = 3) -> list[str]:
    if len(text) < n:
        return [text] if text else []
    size = math.ceil(len(text) / n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class WireFormat:
    """Renders replies and errors for one provider format."""

    name: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream"

    def __init__(self, body: Mapping[str, Any], path: str) -> None:
        self.body = body
        self.path = path

    # -- what the request asked for --
    def model(self) -> str:
        return str(self.body.get("model", "fake-model"))

    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    def prompt_text(self) -> str:
        return json.dumps(self.body.get("messages", []))

    def last_user_text(self) -> str:
        return ""

    def schema(self) -> Mapping[str, Any] | None:
        return None

    def default_reply(self) -> Reply:
        schema = self.schema()
        if schema is not None:
            return Reply(json=example_for_schema(schema))
        return Reply(text=f"echo: {self.last_user_text()}"[:200])

    def usage_of(self, reply: Reply, text: str) -> tuple[int, int]:
        return (reply.input_tokens or _words(self.prompt_text()), reply.output_tokens or _words(text or "x"))

    # -- what the reply looks like --
    def complete(self, reply: Reply) -> Any:
        raise NotImplementedError

    def stream(self, reply: Reply) -> Iterator[bytes]:
        raise NotImplementedError

    def embed(self) -> Any:
        raise NotImplementedError

    def error(self, status: int, message: str) -> Any:
        return {"error": {"message": message, "type": "server_error", "code": None}}

    def malformed_event(self) -> bytes:
        return b"data: {not json\n\n"

    def retry_info(self, body: Any, retry_after: float) -> tuple[Any, bool]:
        """The error body carrying ``retry_after``, and whether a ``retry-after`` header says it too."""
        return body, True

    def text_of(self, reply: Reply) -> str:
        if reply.json is not None:
            return json.dumps(reply.json)
        return reply.text or ""


class OpenAIWire(WireFormat):
    name = "openai"

    def last_user_text(self) -> str:
        for m in reversed(self.body.get("messages", [])):
            if m.get("role") == "user":
                c = m.get("content")
                return (
                    c
                    if isinstance(c, str)
                    else " ".join(p.get("text", "") for p in c or () if isinstance(p, dict))
                )
        return ""

    def schema(self) -> Mapping[str, Any] | None:
        fmt = self.body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return dict(fmt.get("json_schema", {}).get("schema", {}))
        return None

    def _calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in enumerate(reply.tool_calls)
        ]

    def _finish(self, reply: Reply) -> str:
        return reply.finish or ("tool_calls" if reply.tool_calls else "stop")

    def complete(self, reply: Reply) -> Any:
        text = self.text_of(reply)
        pin, pout = self.usage_of(reply, text)
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model(),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish(reply)}
            ],
            "usage": {
                "prompt_tokens": pin,
                "completion_tokens": pout,
                "total_tokens": pin + pout,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_fake",
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        choices = (
            []
            if usage is not None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        data = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model(),
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def stream(self, reply: Reply) -> Iterator[bytes]:
        text = self.text_of(reply)
        yield self._chunk({"role": "assistant", "content": ""})
        for piece in _pieces(text):
            yield self._chunk({"content": piece})
        for i, call in enumerate(self._calls(reply)):
            fn = call["function"]
            yield self._chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": fn["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _pieces(fn["arguments"], 2):
                yield self._chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        yield self._chunk({}, self._finish(reply))
        if (self.body.get("stream_options") or {}).get("include_usage"):
            pin, pout = self.usage_of(reply, text)
            yield self._chunk(
                {}, usage={"prompt_tokens": pin, "completion_tokens": pout, "total_tokens": pin + pout}
            )
        yield b"data: [DONE]\n\n"

    def embed(self) -> Any:
        inputs = self.body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        base64_wanted = self.body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = fake_vector(str(text), int(self.body.get("dimensions") or 8))
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if base64_wanted else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(_words(str(t)) for t in inputs)
        return {
            "object": "list",
            "data": data,
            "model": self.model(),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def error(self, status: int, message: str) -> Any:
        kind = {429: "rate_limit_exceeded", 401: "invalid_request_error", 400: "invalid_request_error"}
        code = "context_length_exceeded" if "context length" in message else None
        return {
            "error": {
                "message": message,
                "type": kind.get(status, "server_error"),
                "param": None,
                "code": code,
            }
        }


class AnthropicWire(WireFormat):
    name = "anthropic"

    def last_user_text(self) -> str:
        for m in reversed(self.body.get("messages", [])):
            if m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, str):
                    return c
                return " ".join(
                    b.get("text", "") for b in c or () if isinstance(b, dict) and b.get("type") == "text"
                )
        return ""

    def forced_tool(self) -> Mapping[str, Any] | None:
        choice = self.body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            for tool in self.body.get("tools", []):
                if tool.get("name") == choice.get("name"):
                    return dict(tool)
        return None

    def schema(self) -> Mapping[str, Any] | None:
        tool = self.forced_tool()
        return dict(tool.get("input_schema", {})) if tool else None

    def _blocks(self, reply: Reply) -> list[dict[str, Any]]:
        forced = self.forced_tool()
        if reply.json is not None and forced is not None:
            return [{"type": "tool_use", "id": "toolu_out", "name": forced["name"], "input": reply.json}]
        blocks: list[dict[str, Any]] = []
        text = self.text_of(reply)
        if text:
            blocks.append({"type": "text", "text": text})
        blocks += [
            {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
            for i, (n, a) in enumerate(reply.tool_calls)
        ]
        return blocks

    def _stop(self, blocks: list[dict[str, Any]], reply: Reply) -> str:
        if reply.finish:
            return {"length": "max_tokens", "stop": "end_turn"}.get(reply.finish, reply.finish)
        return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"

    def complete(self, reply: Reply) -> Any:
        blocks = self._blocks(reply)
        pin, pout = self.usage_of(reply, json.dumps(blocks))
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model(),
            "content": blocks,
            "stop_reason": self._stop(blocks, reply),
            "stop_sequence": None,
            "usage": {
                "input_tokens": pin,
                "output_tokens": pout,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    def stream(self, reply: Reply) -> Iterator[bytes]:
        blocks = self._blocks(reply)
        pin, pout = self.usage_of(reply, json.dumps(blocks))
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model(),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": pin, "output_tokens": 1},
        }
        yield self._event("message_start", {"message": message})
        yield self._event("ping", {})
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                yield self._event(
                    "content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}
                )
                for piece in _pieces(block["text"]):
                    yield self._event(
                        "content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": piece}}
                    )
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                yield self._event("content_block_start", {"index": i, "content_block": start})
                for piece in _pieces(json.dumps(block["input"]), 2):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield self._event("content_block_delta", {"index": i, "delta": delta})
            yield self._event("content_block_stop", {"index": i})
        final: dict[str, Any] = {"stop_reason": self._stop(blocks, reply), "stop_sequence": None}
        yield self._event("message_delta", {"delta": final, "usage": {"output_tokens": pout}})
        yield self._event("message_stop", {})

    def error(self, status: int, message: str) -> Any:
        kinds = {
            429: "rate_limit_error",
            529: "overloaded_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            400: "invalid_request_error",
        }
        return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}

    def malformed_event(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"


class GeminiWire(WireFormat):
    name = "gemini"

    def model(self) -> str:
        return self.path.rsplit("/models/", 1)[-1].split(":", 1)[0]

    def streaming(self) -> bool:
        return ":streamGenerateContent" in self.path

    def prompt_text(self) -> str:
        return json.dumps(self.body.get("contents", []))

    def last_user_text(self) -> str:
        for c in reversed(self.body.get("contents", [])):
            if c.get("role", "user") == "user":
                return " ".join(p.get("text", "") for p in c.get("parts", []) if "text" in p)
        return ""

    def schema(self) -> Mapping[str, Any] | None:
        config = self.body.get("generationConfig") or {}
        found = config.get("responseJsonSchema") or config.get("responseSchema")
        return dict(found) if found else None

    def _candidate(self, reply: Reply, text: str, finish: str | None) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        parts += [{"functionCall": {"name": n, "args": a}} for n, a in reply.tool_calls]
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        return cand

    def _usage(self, reply: Reply, text: str) -> dict[str, int]:
        pin, pout = self.usage_of(reply, text)
        return {"promptTokenCount": pin, "candidatesTokenCount": pout, "totalTokenCount": pin + pout}

    def _finish(self, reply: Reply) -> str:
        return {"length": "MAX_TOKENS", "content_filter": "SAFETY"}.get(reply.finish or "", "STOP")

    def complete(self, reply: Reply) -> Any:
        text = self.text_of(reply)
        return {
            "candidates": [self._candidate(reply, text, self._finish(reply))],
            "usageMetadata": self._usage(reply, text),
            "modelVersion": self.model(),
            "responseId": "fake-resp",
        }

    def stream(self, reply: Reply) -> Iterator[bytes]:
        text = self.text_of(reply)
        pieces = _pieces(text) or [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            part_reply = reply if last else Reply()
            chunk: dict[str, Any] = {
                "candidates": [self._candidate(part_reply, piece, self._finish(reply) if last else None)],
                "modelVersion": self.model(),
                "responseId": "fake-resp",
            }
            if last:
                chunk["usageMetadata"] = self._usage(reply, text)
            yield b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"

    def embed(self) -> Any:
        if ":batchEmbedContents" in self.path:
            texts = [
                " ".join(p.get("text", "") for p in r["content"]["parts"])
                for r in self.body.get("requests", [])
            ]
            return {"embeddings": [{"values": fake_vector(t)} for t in texts]}
        text = " ".join(p.get("text", "") for p in self.body.get("content", {}).get("parts", []))
        return {"embedding": {"values": fake_vector(text)}}

    def error(self, status: int, message: str) -> Any:
        states = {
            429: "RESOURCE_EXHAUSTED",
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            503: "UNAVAILABLE",
            500: "INTERNAL",
        }
        return {"error": {"code": status, "message": message, "status": states.get(status, "INTERNAL")}}

    def retry_info(self, body: Any, retry_after: float) -> tuple[Any, bool]:
        # Gemini says when to come back in the error's RetryInfo detail, not in a header.
        detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
        body["error"]["details"] = [detail]
        return body, False


class OllamaWire(WireFormat):
    name = "ollama"
    stream_content_type = "application/x-ndjson"

    def streaming(self) -> bool:
        return self.body.get("stream", True) is not False

    last_user_text = OpenAIWire.last_user_text

    def schema(self) -> Mapping[str, Any] | None:
        fmt = self.body.get("format")
        return dict(fmt) if isinstance(fmt, dict) else None

    def _final(self, reply: Reply, text: str) -> dict[str, Any]:
        pin, pout = self.usage_of(reply, text)
        return {
            "model": self.model(),
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "length" if reply.finish == "length" else "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": pin,
            "prompt_eval_duration": 100,
            "eval_count": pout,
            "eval_duration": 500,
        }

    def _message(self, reply: Reply, text: str) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if reply.tool_calls:
            msg["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in reply.tool_calls]
        return msg

    def complete(self, reply: Reply) -> Any:
        text = self.text_of(reply)
        return {**self._final(reply, text), "message": self._message(reply, text)}

    def stream(self, reply: Reply) -> Iterator[bytes]:
        text = self.text_of(reply)
        for piece in _pieces(text):
            line = {
                "model": self.model(),
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            yield json.dumps(line).encode() + b"\n"
        final = {**self._final(reply, text), "message": self._message(reply, "")}
        yield json.dumps(final).encode() + b"\n"

    def embed(self) -> Any:
        inputs = self.body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        return {
            "model": self.model(),
            "embeddings": [fake_vector(str(t)) for t in inputs],
            "prompt_eval_count": sum(_words(str(t)) for t in inputs),
        }

    def error(self, status: int, message: str) -> Any:
        return {"error": message}

    def malformed_event(self) -> bytes:
        return b"{not json\n"


class ResponsesWire(OpenAIWire):
    """OpenAI's Responses API: ``output`` items, named stream events ending in ``response.completed``."""

    name = "openai-responses"

    def prompt_text(self) -> str:
        return json.dumps(self.body.get("input", []))

    def last_user_text(self) -> str:
        items = self.body.get("input", [])
        if isinstance(items, str):
            return items
        for item in reversed(items):
            if item.get("role") == "user":
                c = item.get("content")
                return (
                    c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or () if "text" in p)
                )
        return ""

    def schema(self) -> Mapping[str, Any] | None:
        fmt = (self.body.get("text") or {}).get("format") or {}
        return dict(fmt.get("schema", {})) if fmt.get("type") == "json_schema" else None

    def _output(self, reply: Reply) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        text = self.text_of(reply)
        if text:
            content = [{"type": "output_text", "text": text, "annotations": []}]
            out.append(
                {
                    "type": "message",
                    "id": "msg_fake",
                    "role": "assistant",
                    "status": "completed",
                    "content": content,
                }
            )
        out += [
            {
                "type": "function_call",
                "id": f"fc_{i}",
                "call_id": f"call_{i}",
                "name": n,
                "arguments": json.dumps(a),
                "status": "completed",
            }
            for i, (n, a) in enumerate(reply.tool_calls)
        ]
        return out

    def _object(self, reply: Reply, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        pin, pout = self.usage_of(reply, self.text_of(reply))
        incomplete = reply.finish == "length" and status != "in_progress"
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": time.time(),
            "model": self.model(),
            "status": "incomplete" if incomplete else status,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": self.body.get("tool_choice", "auto"),
            "tools": self.body.get("tools", []),
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "usage": None
            if status == "in_progress"
            else {
                "input_tokens": pin,
                "output_tokens": pout,
                "total_tokens": pin + pout,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def complete(self, reply: Reply) -> Any:
        return self._object(reply, "completed", self._output(reply))

    def stream(self, reply: Reply) -> Iterator[bytes]:
        seq = iter(range(10_000))

        def event(name: str, data: dict[str, Any]) -> bytes:
            body = {"type": name, "sequence_number": next(seq), **data}
            return f"event: {name}\ndata: {json.dumps(body)}\n\n".encode()

        yield event("response.created", {"response": self._object(reply, "in_progress", [])})
        yield event("response.in_progress", {"response": self._object(reply, "in_progress", [])})
        output = self._output(reply)
        for i, item in enumerate(output):
            yield from self._item_events(event, i, item)
        yield event("response.completed", {"response": self._object(reply, "completed", output)})

    @staticmethod
    def _item_events(event: Any, i: int, item: dict[str, Any]) -> Iterator[bytes]:
        if item["type"] == "message":
            yield event(
                "response.output_item.added",
                {"output_index": i, "item": {**item, "status": "in_progress", "content": []}},
            )
            text = item["content"][0]["text"]
            where = {"item_id": item["id"], "output_index": i, "content_index": 0}
            yield event(
                "response.content_part.added",
                {**where, "part": {"type": "output_text", "text": "", "annotations": []}},
            )
            for piece in _pieces(text):
                yield event("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
            yield event("response.output_text.done", {**where, "text": text, "logprobs": []})
            yield event("response.content_part.done", {**where, "part": item["content"][0]})
        else:
            yield event(
                "response.output_item.added",
                {"output_index": i, "item": {**item, "arguments": "", "status": "in_progress"}},
            )
            for piece in _pieces(item["arguments"], 2):
                yield event(
                    "response.function_call_arguments.delta",
                    {"item_id": item["id"], "output_index": i, "delta": piece},
                )
            yield event(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": i, "arguments": item["arguments"]},
            )
        yield event("response.output_item.done", {"output_index": i, "item": item})

    def malformed_event(self) -> bytes:
        return b"event: response.output_text.delta\ndata: {not json\n\n"


def format_for_path(path: str) -> tuple[type[WireFormat], bool] | None:
    """The wire format serving ``path`` and whether it is an embeddings endpoint."""
    if path.endswith("/chat/completions"):
        return OpenAIWire, False
    if path.endswith("/responses"):
        return ResponsesWire, False
    if path.endswith("/embeddings"):
        return OpenAIWire, True
    if path.endswith("/messages"):
        return AnthropicWire, False
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return GeminiWire, False
    if ":batchEmbedContents" in path or ":embedContent" in path:
        return GeminiWire, True
    if path.endswith("/api/chat"):
        return OllamaWire, False
    if path.endswith("/api/embed"):
        return OllamaWire, True
    return None
