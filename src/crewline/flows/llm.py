"""``ctx.llm``: a model call through the gateway as a durable step.

The checkpoint holds the reply (text, structured output, tool calls), the model that answered, usage,
cost and the prompt version, so a replay returns it without calling (or paying for) the model again. Calls
are charged to the run's and the workflow's budgets; when a budget is exhausted the workflow's
``on_budget`` says what happens: ``fail``, ``degrade`` (the next cheaper tier, down to the cheapest) or
``pause`` (the run waits in the review queue until someone raises the budget and approves).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic
import pydantic_core

from ..errors import BudgetExceeded, ConfigError, CrewlineError, InvalidInput, ModelError, StepError
from ..store.payloads import dump
from .definitions import DEFAULT_RETRY, RetryPolicy
from .engine import Suspend
from .review import create_request, get_request

if TYPE_CHECKING:
    from ..models import Gateway, ModelResponse
    from .context import Context

__all__ = ["LlmRequest", "call_llm", "reply_record"]


@dataclass(frozen=True)
class LlmRequest:
    model: str | None
    messages: tuple[Any, ...]
    prompt: str | None  # "name@version" of the template that produced the messages
    output: type[Any] | None = None
    tools: tuple[Any, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    escalate: bool = False
    retry: RetryPolicy = DEFAULT_RETRY  # for transient model errors the gateway's own retries did not cure

    def input_json(self) -> bytes:
        return dump({"model": self.model, "prompt": self.prompt, "messages": _jsonable(self.messages),
                     "tools": [getattr(t, "name", None) for t in self.tools]})  # fmt: skip


def reply_record(reply: ModelResponse, prompt: str | None) -> dict[str, Any]:
    """What the checkpoint keeps of a reply."""
    return {
        "text": reply.text,
        "output": _jsonable(reply.output),
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
        "finish_reason": reply.finish_reason,
        "model": reply.model,
        "provider": reply.provider,
        "usage": _jsonable(reply.usage),
        "cost": reply.cost,
        "price_known": reply.price_known,
        "cached": reply.cached,
        "latency_ms": reply.latency_ms,
        "prompt": prompt,
    }


async def call_llm(
    ctx: Context, name: str, request: LlmRequest | Callable[[], Awaitable[LlmRequest]]
) -> dict[str, Any]:
    """Run (or replay) one model call as step ``name``; returns its record.

    ``request`` may be a callable building it, so a replay (which returns the record) never resolves or
    renders a prompt again — a prompt label moved or removed since cannot break it.
    """
    engine = ctx._engine
    gateway = engine.models
    if gateway is None:
        raise ConfigError("this app has no model gateway: configure [models] in crewline.toml")
    n, rec = await ctx._begin(name, "llm")
    if rec is not None and rec.status == "done":
        return _note(ctx, n, rec.output)
    if rec is not None and rec.status == "failed":
        err = rec.error or {}
        raise StepError(n, name, str(err.get("type")), str(err.get("message")))
    from .context import _Call

    if not isinstance(request, LlmRequest):
        request = await request()
    call = _Call(n, name, "llm", "read", time.time(), request.input_json())
    if rec is not None and rec.status == "waiting":
        await _after_pause(ctx, call, rec.output["request"])
    await _ensure_budgets(ctx)
    model = request.model
    attempt = 0
    while True:
        attempt += 1
        try:
            reply = await _complete(gateway, ctx, model, request, n)
            break
        except ModelError as e:
            if not (e.retryable and attempt < request.retry.max_attempts):
                await _fail(ctx, call, e)
            await asyncio.sleep(_retry_delay(request.retry, attempt, e))
        except BudgetExceeded as e:
            policy = _policy(ctx)
            if policy == "pause":
                await _pause(ctx, call, e)
            cheaper = _cheaper(gateway, model) if policy == "degrade" else None
            if cheaper is None:
                await _fail(ctx, call, e)
            model = cheaper
        except CrewlineError as e:
            await _fail(ctx, call, e)
    record = reply_record(reply, request.prompt)
    await ctx._record_call(call, "done", dump(record), None, reply.attempts)
    engine.crash_point("after_step_commit", n)
    return _note(ctx, n, record)


def _retry_delay(policy: RetryPolicy, attempt: int, e: ModelError) -> float:
    """The policy's backoff, or longer when the provider said how long to wait (bounded by the policy)."""
    asked = getattr(e, "retry_after", None) or 0.0
    return max(policy.delay(attempt), min(float(asked), policy.max_delay))


async def _complete(
    gateway: Gateway, ctx: Context, model: str | None, request: LlmRequest, n: int
) -> ModelResponse:
    return await gateway.complete(
        model, list(request.messages), tools=list(request.tools) or None, output=request.output,
        max_tokens=request.max_tokens, temperature=request.temperature, escalate=request.escalate,
        budget_scope={"run": ctx.run_id, "workflow": ctx.workflow}, run_id=ctx.run_id, step=n,
    )  # fmt: skip


async def _fail(ctx: Context, call: Any, e: CrewlineError) -> None:
    kind, message = type(e).__name__, str(e)
    await ctx._record_call(call, "failed", None, {"type": kind, "message": message}, 1)
    raise StepError(call.n, call.name, kind, message) from e


async def _pause(ctx: Context, call: Any, e: BudgetExceeded) -> None:
    """Park the run on a review request until someone raises the budget and approves (or rejects)."""
    engine = ctx._engine

    def park(conn: Any) -> None:
        k = conn.scalar("SELECT COUNT(*) FROM reviews WHERE run_id = ? AND step_no = ?", (ctx.run_id, call.n))
        request_id = f"{ctx.run_id}:{call.n}:budget{k}"
        preview = {"budget": e.budget, "limit": e.limit, "spent": e.spent, "requested": e.requested}
        create_request(
            conn, request_id=request_id, run_id=ctx.run_id, step_no=call.n, kind="budget",
            action=f"continue {call.name} over budget: {e}", risk="high", preview=preview, preview_type=None,
            context=ctx.provenance_summary(), on_timeout="escalate", expires_at=None,
            blob_threshold=engine.blob_threshold,
        )  # fmt: skip
        ctx._write_wait_step(conn, call.n, call.name, "llm", "waiting", dump({"request": request_id}), None,
                             call.started)  # fmt: skip
        engine.park(
            conn, ctx.run_id, status="waiting", reason=f"approval:{request_id}", event=None, wake_at=None
        )

    await engine.checkpoint(ctx.run_id, ctx._owner, park)
    raise Suspend(f"paused: {e}")


async def _after_pause(ctx: Context, call: Any, request_id: str) -> None:
    """Resuming a paused call: go on if approved, fail if rejected, keep waiting otherwise."""
    req = await ctx._engine.db.read(lambda conn: get_request(conn, request_id))
    if req.status == "approved":
        return
    if req.status == "rejected":
        await _fail(ctx, call, BudgetExceeded(str(req.preview["budget"]), float(req.preview["limit"]),
                                              float(req.preview["spent"]), float(req.preview["requested"])))  # fmt: skip
    await ctx._park("waiting", f"approval:{request_id}", None, None)


def _note(ctx: Context, n: int, record: dict[str, Any]) -> dict[str, Any]:
    """Add the call to the run's provenance (live and on replay alike)."""
    ctx.provenance.append({"kind": "llm", "step": n, "model": record.get("model"), "prompt": record.get("prompt"),
                           "cost": record.get("cost")})  # fmt: skip
    return record


def _policy(ctx: Context) -> str:
    wf = ctx._engine.workflows.get(ctx.workflow)
    return wf.on_budget if wf is not None else "fail"


def _cheaper(gateway: Gateway, model: str | None) -> str | None:
    order = gateway.config.tier_order
    name = model or gateway.config.default
    if name in order and order.index(name) > 0:
        return order[order.index(name) - 1]
    return None


async def _ensure_budgets(ctx: Context) -> None:
    """Give the run's scope the workflow's per-run limit and today's workflow scope its daily limit,
    unless they have one already (an operator may have raised it, to let a paused run go on)."""
    wf = ctx._engine.workflows.get(ctx.workflow)
    gateway = ctx._engine.models
    if wf is None or gateway is None or gateway.ledger is None:
        return
    ledger = gateway.ledger
    wanted = [(f"run:{ctx.run_id}", wf.budget), (ledger.workflow_day(wf.name), wf.daily_budget)]
    for scope, limit in wanted:
        if limit is None or scope in ctx._budget_scopes:
            continue
        if (await asyncio.to_thread(ledger.status, scope))["limit"] is None:
            await asyncio.to_thread(ledger.set_limit, scope, limit)
        ctx._budget_scopes.add(scope)


async def build_request(
    ctx: Context, prompt: str | None, input: Any, messages: Sequence[Any] | str | None, output: type[Any] | None,
    model: str | None, tools: Sequence[Any] | None, max_tokens: int | None, temperature: float | None,
    escalate: bool,
) -> LlmRequest:  # fmt: skip
    """The request for a ``ctx.llm`` call, with the run's fork overrides applied."""
    overrides = ctx.run.overrides or {}
    msgs = as_messages(messages)
    version = None
    if prompt is not None:
        spec = _prompt_spec(prompt, overrides)
        rendered, version, meta = await _render(ctx, spec, input)
        msgs = (
            *(() if meta.get("system") is None else (_system(str(meta["system"])),)),
            *msgs,
            _user(rendered),
        )
        model = model or meta.get("model")
    elif not msgs:
        raise InvalidInput("ctx.llm needs a prompt= or messages=")
    model = overrides.get("model") or model
    request = LlmRequest(model, msgs, version, output, tuple(_model_tool(t) for t in tools or ()), max_tokens,
                         temperature, escalate)  # fmt: skip
    return request


def step_name(prompt: str | None) -> str:
    """``llm:<prompt name>`` (the label or version is not part of it: a fork may vary them), else ``llm``."""
    return "llm" if prompt is None else f"llm:{prompt.split('@')[0]}"


def _prompt_spec(prompt: str, overrides: dict[str, Any]) -> str:
    base = prompt.split("@")[0]
    for spec in overrides.get("prompts", []):
        if str(spec).split("@")[0] == base:
            return str(spec)
    return prompt


async def _render(ctx: Context, spec: str, input: Any) -> tuple[str, str, dict[str, Any]]:
    from . import prompts

    db = ctx._engine.db
    pv = await asyncio.to_thread(prompts.resolve, db, spec)
    params = _params(input)
    return prompts.render(pv, params), f"{pv.name}@{pv.version}", dict(pv.meta)


def _params(input: Any) -> dict[str, Any]:
    if input is None:
        return {}
    if isinstance(input, dict):
        return dict(input)
    if isinstance(input, pydantic.BaseModel):
        return {**{k: getattr(input, k) for k in type(input).model_fields}, "input": input}
    return {"input": input}


def _model_tool(tool: Any) -> Any:
    from ..models import Tool as ModelTool
    from .tools import as_tool

    if isinstance(tool, ModelTool):
        return tool
    t = as_tool(tool)
    return ModelTool(t.name, t.description, t.json_schema())


def _system(text: str) -> Any:
    from ..models import system

    return system(text)


def _user(text: str) -> Any:
    from ..models import user

    return user(text)


def output_value(record: dict[str, Any], output: type[Any] | None) -> Any:
    if output is None:
        return record["text"]
    return pydantic.TypeAdapter(output).validate_python(record["output"])


def _jsonable(value: Any) -> Any:
    return pydantic_core.to_jsonable_python(value, fallback=str)


def as_messages(messages: Sequence[Any] | str | None) -> tuple[Any, ...]:
    if messages is None:
        return ()
    if isinstance(messages, str):
        from ..models import user

        return (user(messages),)
    return tuple(messages)
