"""What a gateway call asks (:class:`CompletionRequest`) apart from how it is accounted and how it behaves
(:class:`CallOptions`).

Both are frozen dataclasses whose every field has a default, so a field added later breaks no caller.
``gateway.complete(CompletionRequest(...), CallOptions(...))`` is the form the gateway works in; the
keyword form (``gateway.complete("cheap", messages, max_tokens=300, budget_scope=...)``) is split into the
two objects here, by their field names, so the keywords have no list of their own to drift from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from ..errors import InvalidInput
from .types import Message, ModelRequest, ModelResponse, Tool, coerce_messages, coerce_tools

__all__ = [
    "COMPLETE_FIELDS",
    "SCOPE_FIELDS",
    "STREAM_FIELDS",
    "CallOptions",
    "CompleteKeywords",
    "CompletionRequest",
    "Messages",
    "ScopeKeywords",
    "StreamKeywords",
    "call_arguments",
    "canonical",
    "refuse_behaviour",
]

Messages = Sequence[Message | Mapping[str, Any]] | str


@dataclass(frozen=True)
class CompletionRequest:
    """What to ask: ``model`` is an alias, tier, deployment or ``provider/model`` (the configured default
    when ``None``); ``output`` a Pydantic model (or any type) the reply must validate as."""

    model: str | None = None
    messages: Messages = ()
    tools: Sequence[Tool | Mapping[str, Any]] | None = None
    tool_choice: str | None = None
    output: type[Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Sequence[str] | None = None
    extra: Mapping[str, Any] | None = None  # merged into the provider's request body


@dataclass(frozen=True)
class CallOptions:
    """How to account for a call and how it behaves.

    ``budget_scope`` (``workflow``, ``key``, ``run``) names the budgets it counts against; ``run_id`` and
    ``step`` go on its record. ``cache=True`` opts a non-deterministic request into the cache,
    ``cache=False`` keeps any request out of it. ``escalate`` moves to the next tier when the output does
    not validate after ``output_retries`` re-asks, and so does ``confidence(reply) -> False``.
    """

    budget_scope: Mapping[str, str] | None = None
    run_id: str | None = None
    step: int | None = None
    cache: bool | None = None
    escalate: bool = False
    confidence: Callable[[ModelResponse], bool] | None = None
    output_retries: int | None = None


class ScopeKeywords(TypedDict, total=False):
    """The keyword form of the :class:`CallOptions` every kind of call takes."""

    budget_scope: Mapping[str, str] | None
    run_id: str | None
    step: int | None


class StreamKeywords(ScopeKeywords, total=False):
    """The keyword form of a streamed completion: what to ask (but ``output``) and its scope."""

    tools: Sequence[Tool | Mapping[str, Any]] | None
    tool_choice: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: Sequence[str] | None
    extra: Mapping[str, Any] | None


class CompleteKeywords(StreamKeywords, total=False):
    """The keyword form of a completion: every field of both objects."""

    output: type[Any] | None
    output_retries: int | None
    cache: bool | None
    escalate: bool
    confidence: Callable[[ModelResponse], bool] | None


_NO_OPTIONS = CallOptions()
_REQUEST_FIELDS = frozenset(f.name for f in fields(CompletionRequest))
_OPTION_FIELDS = frozenset(f.name for f in fields(CallOptions))
SCOPE_FIELDS = frozenset(ScopeKeywords.__annotations__)
COMPLETE_FIELDS = _REQUEST_FIELDS | _OPTION_FIELDS
STREAM_FIELDS = COMPLETE_FIELDS - {"output", *(_OPTION_FIELDS - SCOPE_FIELDS)}


def call_arguments(
    args: tuple[Any, ...], keywords: dict[str, Any], accepted: frozenset[str]
) -> tuple[CompletionRequest | ModelRequest, CallOptions]:
    """The request and options of a call made either as ``(request, options)`` or in the keyword form
    ``(model, messages, **keywords)``; ``accepted`` are the fields that kind of call takes."""
    if len(args) > 2:
        raise TypeError(f"takes at most 2 positional arguments ({len(args)} given)")
    first, second = (*args, None, None)[:2]
    if isinstance(first, CompletionRequest | ModelRequest) or "request" in keywords:
        return _objects(first, second, keywords)
    for name, given in (("model", first), ("messages", second)):
        if given is not None and name in keywords:
            raise TypeError(f"got multiple values for argument {name!r}")
    model = keywords.pop("model", first)
    messages = keywords.pop("messages", () if second is None else second)
    if not accepted.issuperset(keywords):
        raise TypeError(f"got an unexpected keyword argument {min(keywords.keys() - accepted)!r}")
    options = {name: keywords.pop(name) for name in keywords.keys() & _OPTION_FIELDS}
    request = CompletionRequest(model, messages, **keywords)  # what is left are request fields
    return request, CallOptions(**options) if options else _NO_OPTIONS


def _objects(
    first: Any, second: Any, keywords: dict[str, Any]
) -> tuple[CompletionRequest | ModelRequest, CallOptions]:
    request = keywords.pop("request", first)
    options = keywords.pop("options", second)
    if keywords:
        raise TypeError(
            f"got keyword arguments {', '.join(sorted(keywords))} beside a request object: "
            "put them in the CompletionRequest or CallOptions"
        )
    if not isinstance(request, CompletionRequest | ModelRequest):
        raise TypeError(f"request must be a CompletionRequest or ModelRequest, got {type(request).__name__}")
    if options is not None and not isinstance(options, CallOptions):
        raise TypeError(f"options must be CallOptions, got {type(options).__name__}")
    return request, options or _NO_OPTIONS


def refuse_behaviour(options: CallOptions, what: str) -> None:
    """A stream or an embedding only counts against budgets: options that change a completion's
    behaviour mean nothing there, so they are refused rather than silently ignored."""
    given = [
        name
        for name, value in (
            ("cache", options.cache),
            ("escalate", options.escalate or None),
            ("confidence", options.confidence),
            ("output_retries", options.output_retries),
        )
        if value is not None
    ]
    if given:
        raise InvalidInput(f"{what} does not take {', '.join(given)}: use gateway.complete for them")


def canonical(request: CompletionRequest | ModelRequest, default_max_tokens: int) -> ModelRequest:
    """The canonical request, every field checked before anything is sent."""
    if isinstance(request, ModelRequest):
        checked = canonical(_from_model_request(request), default_max_tokens)
        return checked.with_(response_schema=request.response_schema, schema_name=request.schema_name)
    model, max_tokens = request.model, request.max_tokens
    temperature, top_p = request.temperature, request.top_p
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInput(
            f"model must be a non-empty string naming an alias, tier or provider/model, got {model!r}"
        )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
    ):
        raise InvalidInput(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if temperature is not None and not 0 <= temperature <= 2:
        raise InvalidInput(f"temperature must be between 0 and 2, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {top_p}")
    tools = coerce_tools(request.tools)
    _check_tool_choice(request.tool_choice, tools)
    return ModelRequest(
        model=model or "",
        messages=coerce_messages(request.messages),
        tools=tools,
        tool_choice=request.tool_choice,
        max_tokens=max_tokens or default_max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(request.stop or ()),
        extra=dict(request.extra or {}),
    )


def _check_tool_choice(choice: str | None, tools: Sequence[Tool]) -> None:
    if choice is None or choice in ("auto", "none", "required") or choice in {t.name for t in tools}:
        return
    raise InvalidInput(f"tool_choice {choice!r} is not auto, none, required or the name of a given tool")


def _from_model_request(request: ModelRequest) -> CompletionRequest:
    return CompletionRequest(
        model=request.model or None,
        messages=request.messages,
        tools=request.tools,
        tool_choice=request.tool_choice,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        extra=request.extra,
    )
