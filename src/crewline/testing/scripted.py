"""A scripted model: deterministic replies, tool calls and failures, no network.

    model = ScriptedModel("first reply", tool_call("lookup", {"id": 7}), RateLimited("slow down"), {"label": "spam"})
    gateway = Gateway.for_testing(model)          # every call goes to the script, in order
    ...
    assert model.requests[0].messages[-1].text == "hi"

Items are consumed one per provider call: a string is a text reply, a :class:`ToolCall` (or a list of
them) a tool-call reply, a dict a structured (JSON) reply, an exception (instance or class) is raised, a
:class:`ModelResponse` is returned as is, and a callable gets the request and returns any of these. When
the script runs out, ``default`` answers (a schema-shaped example for structured requests).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..models.http import HttpClient
from ..models.providers.base import Adapter, Endpoint
from ..models.types import EmbeddingResponse, ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage
from .wire import example_for_schema, fake_vector

__all__ = ["ScriptedModel", "tool_call"]

Item = str | ToolCall | list[ToolCall] | dict[str, Any] | BaseException | type[BaseException] | ModelResponse
Script = Item | Callable[[ModelRequest], Item]


def tool_call(name: str, arguments: dict[str, Any] | None = None, id: str | None = None) -> ToolCall:
    return ToolCall(id or f"call_{name}", name, dict(arguments or {}))


class ScriptedModel(Adapter):
    """An in-process model adapter replaying a script; plug it in with ``Gateway.for_testing(model)``."""

    format = "scripted"

    def __init__(self, *items: Script, default: Script | None = None, name: str = "test") -> None:
        super().__init__(Endpoint(name, "scripted", "scripted://"), HttpClient())
        self._items: deque[Script] = deque(items)
        self.default = default
        self.requests: list[ModelRequest] = []
        self.models: list[str] = []

    def add(self, *items: Script) -> ScriptedModel:
        self._items.extend(items)
        return self

    @property
    def remaining(self) -> int:
        return len(self._items)

    def _next(self, request: ModelRequest, model: str) -> ModelResponse:
        self.requests.append(request)
        self.models.append(model)
        item: Any = self._items.popleft() if self._items else self.default
        if callable(item) and not isinstance(item, type):
            item = item(request)
        if item is None:
            item = (
                example_for_schema(request.response_schema) if request.response_schema is not None else "ok"
            )
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item(f"scripted {item.__name__}")
        if isinstance(item, BaseException):
            raise item
        return self._response(item, request, model)

    def _response(self, item: Any, request: ModelRequest, model: str) -> ModelResponse:
        if isinstance(item, ModelResponse):
            return item
        calls: tuple[ToolCall, ...] = ()
        text = ""
        if isinstance(item, ToolCall):
            calls = (item,)
        elif isinstance(item, list):
            calls = tuple(item)
        elif isinstance(item, dict):
            text = json.dumps(item)
        else:
            text = str(item)
        words_in = sum(len(m.text.split()) for m in request.messages) or 1
        words_out = max(1, len(text.split()) + 5 * len(calls))
        return ModelResponse(
            text=text,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            usage=Usage(input_tokens=words_in, output_tokens=words_out),
            model=model,
            provider=self.provider,
        )

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        return self._next(request, model)

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        resp = self._next(request, model)
        words = resp.text.split(" ")
        for i, word in enumerate(words):
            yield StreamChunk(text=word if i == 0 else " " + word)
        for call in resp.tool_calls:
            yield StreamChunk(tool_call=call)
        yield StreamChunk(finish_reason=resp.finish_reason, usage=resp.usage)

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        return EmbeddingResponse(
            [fake_vector(t) for t in texts],
            model,
            self.provider,
            Usage(input_tokens=sum(len(t.split()) for t in texts)),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
