"""Canonical request and response types, the one shape every provider adapter converts to and from.

Messages carry text and image parts, tool calls and tool results; responses carry content, tool calls, a
finish reason and :class:`Usage` (input tokens *including* cache reads and writes, output tokens *including*
reasoning). Plain dataclasses: they are built on every call, so they stay cheap.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import InvalidInput
from ..store.payloads import parse_json

__all__ = [
    "EmbeddingResponse",
    "ImagePart",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Part",
    "Role",
    "StreamChunk",
    "TextPart",
    "Tool",
    "ToolCall",
    "Usage",
    "assistant",
    "coerce_messages",
    "coerce_tools",
    "system",
    "tool_result",
    "user",
]

Role = Literal["system", "user", "assistant", "tool"]
_ROLES = ("system", "user", "assistant", "tool")
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by URL or inline bytes (``data`` base64, with its ``media_type``)."""

    url: str | None = None
    data: str | None = None
    media_type: str = "image/png"

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str = "image/png") -> ImagePart:
        return cls(data=base64.b64encode(raw).decode("ascii"), media_type=media_type)

    def data_url(self) -> str:
        return self.url if self.url is not None else f"data:{self.media_type};base64,{self.data}"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on a ``tool`` message: the call it answers
    name: str | None = None  # on a ``tool`` message: the tool's name (Gemini needs it)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def parts(self) -> tuple[Part, ...]:
        if isinstance(self.content, str):
            return (TextPart(self.content),) if self.content else ()
        return self.content


def system(text: str) -> Message:
    return Message("system", text)


def user(content: str | Sequence[Part]) -> Message:
    return Message("user", content if isinstance(content, str) else tuple(content))


def assistant(text: str = "", tool_calls: Sequence[ToolCall] = ()) -> Message:
    return Message("assistant", text, tuple(tool_calls))


def tool_result(call: ToolCall | str, result: Any, name: str | None = None) -> Message:
    call_id = call if isinstance(call, str) else call.id
    tool_name = name if name is not None or isinstance(call, str) else call.name
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return Message("tool", text, tool_call_id=call_id, name=tool_name)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the caller asked for, before routing: ``model`` is still an alias, tier or ``provider/model``.

    ``response_schema`` is the JSON schema of the structured output wanted (set by ``output=``).
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None  # "auto", "none", "required" or a tool name
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    response_schema: Mapping[str, Any] | None = None
    schema_name: str = "output"
    extra: Mapping[str, Any] = field(default_factory=dict)  # merged into the provider's request body

    def with_(self, **changes: Any) -> ModelRequest:
        return replace(self, **changes)


@dataclass(slots=True)
class ModelResponse:
    """A reply. ``output`` holds the validated instance when ``output=`` was given; ``cost`` is in USD."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    deployment: str = ""
    response_id: str | None = None
    output: Any = None
    cost: float = 0.0
    price_known: bool = True
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cached: bool = False
    attempts: int = 1

    @property
    def content(self) -> str:
        return self.text

    def message(self) -> Message:
        """This reply as an assistant message, to append to a conversation."""
        return Message("assistant", self.text, self.tool_calls)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed reply: a text delta, a completed tool call, or the final usage/finish."""

    text: str = ""
    tool_call: ToolCall | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    response_id: str | None = None


@dataclass(slots=True)
class EmbeddingResponse:
    vectors: list[list[float]]
    model: str = ""
    provider: str = ""
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    price_known: bool = True
    latency_ms: float = 0.0


# -- coercion of caller input ------------------------------------------------------------------------------


def coerce_messages(messages: Sequence[Message | Mapping[str, Any]] | str) -> tuple[Message, ...]:
    """Canonical messages from :class:`Message` objects or OpenAI-style dicts; a bare string is one user turn."""
    if isinstance(messages, str):
        return (Message("user", messages),)
    if not isinstance(messages, Sequence) or not messages:
        raise InvalidInput("messages must be a non-empty list of messages (or a string for one user message)")
    return tuple(_coerce_message(i, m) for i, m in enumerate(messages))  # type: ignore[arg-type]


def _coerce_message(i: int, m: Message | Mapping[str, Any]) -> Message:
    if isinstance(m, Message):
        return m
    if not isinstance(m, Mapping):
        raise InvalidInput(
            f"messages[{i}] must be a Message or a dict with 'role' and 'content', got {m!r:.80}"
        )
    role = m.get("role")
    if role not in _ROLES:
        raise InvalidInput(f"messages[{i}]: role {role!r} is not one of {', '.join(_ROLES)}")
    content = m.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        if not isinstance(content, Sequence):
            raise InvalidInput(f"messages[{i}]: content must be a string or a list of parts")
        content = tuple(_coerce_part(i, j, p) for j, p in enumerate(content))
    calls = tuple(_coerce_call(i, c) for c in m.get("tool_calls") or ())
    if role == "tool" and not m.get("tool_call_id"):
        raise InvalidInput(f"messages[{i}]: a tool message needs 'tool_call_id' naming the call it answers")
    return Message(role, content, calls, m.get("tool_call_id"), m.get("name"))


def _coerce_part(i: int, j: int, p: Any) -> Part:
    if isinstance(p, TextPart | ImagePart):
        return p
    if isinstance(p, str):
        return TextPart(p)
    kind = p.get("type") if isinstance(p, Mapping) else None
    if kind == "text":
        return TextPart(str(p.get("text", "")))
    if kind == "image_url":
        url = p["image_url"]["url"] if isinstance(p.get("image_url"), Mapping) else p.get("image_url")
        if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
            head, data = url[5:].split(";base64,", 1)
            return ImagePart(data=data, media_type=head or "image/png")
        return ImagePart(url=str(url))
    raise InvalidInput(f"messages[{i}].content[{j}]: expected a text or image_url part, got {p!r:.80}")


def _coerce_call(i: int, c: Any) -> ToolCall:
    if isinstance(c, ToolCall):
        return c
    try:
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            args = parse_json(args or "{}", f"messages[{i}]: the tool call's arguments")
        return ToolCall(str(c.get("id", "")), str(fn["name"]), dict(args))
    except InvalidInput:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"messages[{i}]: malformed tool call {c!r:.80}: {e}") from None


def coerce_tools(tools: Sequence[Tool | Mapping[str, Any]] | None) -> tuple[Tool, ...]:
    """Canonical tools from :class:`Tool` objects or OpenAI-style ``{"type": "function", ...}`` dicts."""
    out: list[Tool] = []
    seen: set[str] = set()
    for i, t in enumerate(tools or ()):
        if not isinstance(t, Tool):
            fn = t.get("function", t) if isinstance(t, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise InvalidInput(f"tools[{i}] must be a Tool or a dict with a 'name', got {t!r:.80}")
            t = Tool(fn["name"], fn.get("description") or "", fn.get("parameters") or {"type": "object"})
        if not t.name or not all(ch.isalnum() or ch in "_-" for ch in t.name) or len(t.name) > 64:
            raise InvalidInput(f"tools[{i}]: name {t.name!r} must be 1-64 letters, digits, '_' or '-'")
        if t.name in seen:
            raise InvalidInput(f"tools[{i}]: tool name {t.name!r} is given twice")
        if not isinstance(t.parameters, Mapping) or t.parameters.get("type") != "object":
            raise InvalidInput(f"tools[{i}] ({t.name}): parameters must be a JSON schema with type 'object'")
        seen.add(t.name)
        out.append(t)
    return tuple(out)
