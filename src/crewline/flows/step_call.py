"""``ctx.step`` and ``ctx.tool``: a Python call run once, durably, with retries and a timeout.

The recorded result is the call's return value as JSON; a replay validates it back into the declared
return type. Tools are steps whose arguments are validated and recorded, and which a person approves
first when their risk asks for it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

import pydantic_core

from ..config import parse_duration
from ..errors import ActionRejected, ConfigError, InvalidInput, StepError
from ..store.payloads import dump, load_json
from .approvals import Approval, request_approval
from .definitions import (
    DEFAULT_RETRY,
    EFFECTS,
    NO_RETRY,
    Effect,
    RetryPolicy,
    return_adapter,
    return_type,
    type_ref,
)
from .journal import Entry, FailedStep, Journal, Outcome
from .reconcile import Reconciled, check_step_name
from .states import StepKind
from .tools import Tool, as_tool

__all__ = ["Call", "fn_name", "run_call", "use_tool"]

_SCALARS = (int, str, float, bool, type(None))


@dataclass(slots=True)
class Call:
    """One durable call of ``fn``: ``kind`` "step" or "tool", ``input_json`` what to record as its input.

    Never changed once made (``replace`` makes another), but not a frozen dataclass: this and the
    other records made on every step (``_Live``, the journal's ``Entry`` and ``Outcome``, the lease
    ``Guard``) cost four times as much to build frozen, about a twentieth of a lone SQLite step."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str
    kind: StepKind = "step"
    effect: str = "read"
    retry: RetryPolicy | None = None
    timeout: float | str | None = None
    idempotency_key: str | None = None
    input_json: bytes | None = None
    compensate: Callable[..., Any] | None = None  # called with the result to undo the step
    validate: Callable[[Any], dict[str, Any]] | None = None  # a tool's arguments, edited by an operator
    reconcile: Callable[..., Any] | None = None  # asks whether the action happened, after a crash
    shadow: Any = None  # what an irreversible call returns in a shadow run, where it is not made


@dataclass(slots=True)  # not frozen: made on every step, see Call
class _Live:
    """A call about to run: its final arguments, retry policy and timeout."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: RetryPolicy = DEFAULT_RETRY
    seconds: float | None = None


async def run_call(journal: Journal, call: Call) -> Any:
    """Run (or replay) ``call`` as the run's next step and return its (recorded) result."""
    if call.effect not in EFFECTS:
        raise ConfigError(f"effect must be one of {', '.join(EFFECTS)}, got {call.effect!r}")
    if call.reconcile is None:
        return await _run(journal, call)
    # A check recorded by an earlier execution follows the action: pass it, whatever the action did.
    try:
        value = await _run(journal, call)
    except StepError:
        await _pass_check(journal, call)
        raise
    await _pass_check(journal, call)
    return value


async def _run(journal: Journal, call: Call) -> Any:
    entry = await journal.begin(call.name, call.kind, cast(Effect, call.effect), call.input_json)
    if call.compensate is not None:
        entry = replace(entry, compensation=fn_name(call.compensate))
    adapter = return_adapter(call.fn)
    if entry.record is not None and entry.record.status == "retry":
        call = _edited(call, entry.record.input)
        entry = entry.with_input(call.input_json)
    elif entry.record is not None and not entry.finished:
        answer = await _reconcile(journal, entry, call) if call.reconcile is not None else None
        if answer is None or answer.status == "unknown":
            await journal.ask_outcome(entry)
        if answer.status == "done":
            output = answer.output if adapter is None else adapter.validate_python(answer.output)
            return await _settle(journal, entry, call, output)
    elif entry.record is not None:
        if entry.record.status == "failed":
            journal.failed_step = FailedStep(entry.n, entry.name, type_ref(call.fn), entry.record.input)
        value = journal.replay(entry)
        if adapter is not None and not (entry.record.shadowed is not None and value is None):
            value = adapter.validate_python(value)
        if call.compensate is not None and entry.record.compensation is not None:
            journal.register(entry, call.compensate, value)
        return value
    kwargs = call.kwargs
    irreversible = call.effect == "irreversible"
    takes_key = "idempotency_key" not in kwargs and _accepts_key(call.fn)
    key = ""  # made only for what uses it: a call that takes one, an irreversible call's intent
    if takes_key or irreversible:
        key = call.idempotency_key or journal.step_key(entry.n)
    if takes_key:
        kwargs = {**kwargs, "idempotency_key": key}
    policy = call.retry or (NO_RETRY if irreversible else DEFAULT_RETRY)
    seconds = None if call.timeout is None else parse_duration(call.timeout)
    if irreversible and entry.input_json is None and journal.run.shadow:
        entry = entry.with_input(dump(_arguments(call.args, kwargs), "the step's arguments"))
    if irreversible and not await journal.go_live(entry, key, call.shadow):
        # None, the stand-in when none is given, is returned as it is whatever the declared type.
        return call.shadow if adapter is None or call.shadow is None else adapter.validate_python(call.shadow)
    result, attempts = await _tries(journal, entry, _Live(call.fn, call.args, kwargs, policy, seconds))
    return await _settle(journal, entry, call, result, attempts)


async def _settle(journal: Journal, entry: Entry, call: Call, result: Any, attempts: int = 1) -> Any:
    """Record ``result`` as the step's outcome and return it as a replay would."""
    adapter = return_adapter(call.fn)
    # A plain JSON scalar of the declared type reads back as itself: skip the validation round trip.
    scalar = type(result) in _SCALARS and return_type(call.fn) in (None, type(result))
    try:
        data = dump(
            result if adapter is None or scalar else adapter.dump_python(result, mode="json"),
            f"the output of step {entry.n} ({entry.name})",
        )
    except InvalidInput as e:  # what cannot be read back must not be recorded as the outcome
        raise await _fail(journal, entry, e, attempts) from None
    await journal.record(entry, Outcome("done", data, None, attempts))
    journal.crash_point("after_step_commit", entry.n)
    value = result if scalar else load_json(data) if adapter is None else adapter.validate_json(data)
    if call.compensate is not None:
        journal.register(entry, call.compensate, value)
    return value


async def _reconcile(journal: Journal, entry: Entry, call: Call) -> Reconciled:
    """Ask the call's check whether the action of ``entry`` (an intent, nothing more) happened."""
    check = call.reconcile
    assert check is not None and entry.record is not None
    recorded = entry.record.output if isinstance(entry.record.output, dict) else {}
    key = recorded.get("idempotency_key") or call.idempotency_key or journal.step_key(entry.n)
    kwargs = dict(call.kwargs)
    if _accepts_key(check) and "idempotency_key" not in kwargs:
        kwargs["idempotency_key"] = key
    adapter = return_adapter(call.fn)

    async def ask() -> dict[str, Any]:
        answer = await _invoke(_Live(check, call.args, kwargs))
        if not isinstance(answer, Reconciled):
            raise InvalidInput(
                f"the reconcile check {fn_name(check)} of step {entry.n} ({entry.name}) must return "
                f"Reconciled.done(output), Reconciled.not_done() or Reconciled.unknown(), not {type(answer).__name__}"
            )
        if answer.status == "done" and adapter is not None:
            answer = Reconciled.done(adapter.dump_python(answer.output, mode="json"))
        return answer.model_dump(mode="json")

    name = check_step_name(entry.name)
    recorded_answer = await run_call(journal, Call(ask, (), {}, name, "reconcile", "read", call.retry))
    return Reconciled.model_validate(recorded_answer)


async def _pass_check(journal: Journal, call: Call) -> None:
    following = journal.next_record()
    name = check_step_name(call.name)
    if following is not None and following.kind == "reconcile" and following.name == name:
        await journal.begin(name, "reconcile")


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A plain step's arguments as JSON, for the "would have done" of a shadow run."""
    given = {"args": list(args), "kwargs": {k: v for k, v in kwargs.items() if k != "idempotency_key"}}
    return pydantic_core.to_jsonable_python(given, fallback=repr)


def _edited(call: Call, arguments: Any) -> Call:
    """The call with the arguments an operator edited before asking for it again."""
    if call.validate is None or arguments is None:
        return call
    kwargs = call.validate(arguments)
    return replace(call, kwargs=kwargs, input_json=dump(kwargs))


async def _tries(journal: Journal, entry: Entry, live: _Live) -> tuple[Any, int]:
    """The call's result and how many attempts it took; a failure that is not retried is recorded and
    raised as a :class:`StepError`, the journal keeping which step failed."""
    attempt = 0
    while True:
        attempt += 1
        try:
            # Without a timeout the call is awaited as it is (one coroutine less on every step).
            return await (_call(live) if live.seconds is None else _invoke(live)), attempt
        except Exception as e:
            if attempt < live.policy.max_attempts and live.policy.retryable(e):
                await asyncio.sleep(live.policy.delay(attempt))
                continue
            error = await _fail(journal, entry, e, attempt)
            arguments = None if entry.input_json is None else load_json(entry.input_json)
            journal.failed_step = FailedStep(entry.n, entry.name, type_ref(live.fn), arguments)
            raise error from e


async def _fail(journal: Journal, entry: Entry, exc: Exception, attempts: int) -> StepError:
    """Record the step as failed with ``exc``; returns the error the workflow sees."""
    kind, message = type(exc).__name__, str(exc)[:4000]
    error = {"type": kind, "message": message, "attempts": attempts}
    await journal.record(entry, Outcome("failed", None, error, attempts))
    return StepError(entry.n, entry.name, kind, message)


async def _invoke(live: _Live) -> Any:
    if live.seconds is None:
        return await _call(live)
    async with asyncio.timeout(live.seconds):
        return await _call(live)


def _call(live: _Live) -> Awaitable[Any]:
    """The call's awaitable: the coroutine of an ``async def``, a plain function run in a thread."""
    if _is_async(live.fn):
        return cast(Awaitable[Any], live.fn(*live.args, **live.kwargs))
    return _threaded(live)


async def _threaded(live: _Live) -> Any:
    result = await asyncio.to_thread(live.fn, *live.args, **live.kwargs)
    return await result if inspect.isawaitable(result) else result


async def use_tool(journal: Journal, tool: Tool | Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Validate the arguments, ask a person first when the tool's risk says so, then run it as a step."""
    t = as_tool(tool)
    kwargs = t.validate(arguments)
    # A shadow run makes no irreversible call, so there is nothing for a person to approve.
    held_back = journal.run.shadow and t.effect == "irreversible"
    if not held_back and journal.engine.risk_policy.risk_for(t.name, t.default_risk) != "low":
        preview = {"tool": t.name, "arguments": pydantic_core.to_jsonable_python(kwargs)}
        decision = await request_approval(journal, Approval(f"tool {t.name}", preview, t.default_risk))
        if not decision.approved:
            raise ActionRejected(f"tool {t.name}", decision.decided_by, decision.comment)
        if isinstance(decision.edited, dict):
            kwargs = t.validate(decision.edited.get("arguments", decision.edited))
    call = Call(
        t.fn,
        (),
        kwargs,
        t.name,
        "tool",
        t.effect,
        input_json=dump(kwargs),
        compensate=t.compensate,
        validate=t.validate,
        shadow=t.shadow,
    )
    return await run_call(journal, call)


@lru_cache(maxsize=1024)
def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


@lru_cache(maxsize=1024)
def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
