"""``ctx.llm``: a model call through the gateway as a durable step.

The checkpoint holds the reply (text, structured output, tool calls), the model that answered, usage,
cost and the prompt version, so a replay returns it without calling (or paying for) the model again. Calls
are charged to the run's and the workflow's budgets; when a budget is exhausted the workflow's
``on_budget`` says what happens: ``fail``, ``degrade`` (the next cheaper tier, down to the cheapest) or
``pause`` (the run waits in the review queue until someone raises the budget and approves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn

import pydantic
import pydantic_core

from ..errors import BudgetExceeded, ConfigError, CrewlineError, InvalidInput, ModelError, StepError
from ..models.calls import CallOptions, CompletionRequest
from ..models.config import Overflow
from ..models.types import coerce_messages
from ..observe.model_calls import prompt_for_calls
from ..store.database import Conn
from ..store.payloads import dump
from . import prompts
from .definitions import DEFAULT_RETRY, RetryPolicy
from .engine import Suspend
from .fit import SUMMARY_TOKENS, Cut, FitRequest, MemoryHit, fit, with_memory
from .journal import Entry, Journal, Outcome
from .review_requests import NewRequest, count_requests, get_request
from .shadow import spending_as
from .states import Park
from .tools import as_tool

if TYPE_CHECKING:
    from ..models import Gateway, ModelResponse

__all__ = ["SUMMARY_PROMPT", "LlmCall", "LlmRequest", "ModelCalls", "reply_record"]

SUMMARY_PROMPT = (
    "Summarise the following part of a longer text in a few sentences. Keep names, dates, amounts, "
    "decisions and open questions; leave out greetings, signatures and quoted repeats."
)


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
    memory: tuple[MemoryHit, ...] = ()  # shown with the messages; dropped lowest score first to fit
    overflow: Overflow | None = None  # None: the workflow's, else [models] overflow

    def input_json(self) -> bytes:
        tools = [getattr(t, "name", None) for t in self.tools]
        messages = _jsonable(self.messages)
        return dump({"model": self.model, "prompt": self.prompt, "messages": messages, "tools": tools})


@dataclass(frozen=True)
class LlmCall:
    """What ``ctx.llm`` was asked (see its docstring); :func:`build_request` turns it into a request."""

    prompt: str | None = None
    input: Any = None
    messages: Sequence[Any] | str | None = None
    output: type[Any] | None = None
    model: str | None = None
    tools: Sequence[Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    escalate: bool = False
    memory: Sequence[MemoryHit] = ()
    overflow: Overflow | None = None


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


class ModelCalls:
    """A run's model calls as durable steps; remembers which budget scopes already have their limits."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._budget_scopes: set[str] = set()

    async def call(
        self, name: str, request: LlmRequest | Callable[[], Awaitable[LlmRequest]]
    ) -> dict[str, Any]:
        """Run (or replay) one model call as step ``name``; returns its record.

        ``request`` may be a callable building it, so a replay (which returns the record) never resolves or
        renders a prompt again — a prompt label moved or removed since cannot break it.
        """
        journal = self.journal
        gateway = journal.engine.models
        if gateway is None:
            raise ConfigError("this app has no model gateway: configure [models] in crewline.toml")
        upcoming = journal.next_record()
        cut: Cut | None = None
        if upcoming is None or upcoming.name != name or upcoming.status not in ("done", "failed"):
            # Fitting may record a summary step first, so it comes before this step is numbered.
            if not isinstance(request, LlmRequest):
                request = await request()
            request, cut = await self._fit(name, gateway, request)
        entry = await journal.begin(name, "llm")
        rec = entry.record
        if rec is not None and entry.finished:
            return _note(journal, entry.n, journal.replay(entry))
        assert isinstance(request, LlmRequest)
        call = entry.with_input(request.input_json())
        if rec is not None and rec.status == "waiting":
            await _after_pause(journal, call, rec.output["request"])
        await self._ensure_budgets()
        reply = await _complete_within_budget(journal, gateway, call, request)
        record = reply_record(reply, request.prompt)
        if cut is not None:
            record["cut"] = cut.record()
        await journal.record(call, Outcome("done", dump(record), None, reply.attempts))
        journal.crash_point("after_step_commit", entry.n)
        return _note(journal, entry.n, record)

    async def _fit(self, name: str, gateway: Gateway, request: LlmRequest) -> tuple[LlmRequest, Cut | None]:
        """The request within its model's context window, by the overflow policy. A request that cannot be
        sent (malformed, an unknown model, refused by the policy) fails the step, as a refused call does."""

        async def summarize(text: str) -> str:
            return await self.summarize(f"{name}:summarize", text, SUMMARY_PROMPT)

        try:
            messages = coerce_messages(list(request.messages)) if request.messages else ()
            window = gateway.context_window(request.model)
            if window is None:  # nothing known to fit it to: sent as asked, the provider is the judge
                return replace(request, messages=with_memory(messages, request.memory), memory=()), None
            asked = FitRequest(
                messages=messages,
                memory=request.memory,
                tools=tuple(request.tools),
                window=window,
                max_tokens=request.max_tokens or gateway.config.max_tokens,
                policy=request.overflow or _overflow(self.journal, gateway),
                model=request.model or str(gateway.config.default),
            )
            fitted, cut = await fit(asked, summarize)
        except (InvalidInput, ModelError) as e:
            entry = await self.journal.begin(name, "llm")
            await _fail(self.journal, entry.with_input(request.input_json()), e)
        return replace(request, messages=fitted, memory=()), cut

    async def summarize(self, name: str, text: str, instructions: str) -> str:
        """A summary of ``text`` by the cheapest tier, as durable model call ``name`` (cut to fit its window)."""
        gateway = self.journal.engine.models
        assert gateway is not None
        from ..models import system, user

        ask = LlmRequest(
            gateway.cheapest_tier(),
            (system(instructions), user(text)),
            None,
            max_tokens=SUMMARY_TOKENS,
            overflow="truncate",
        )
        return str((await self.call(name, ask)).get("text") or "")

    async def _ensure_budgets(self) -> None:
        """Give the run's scope the workflow's per-run limit and today's workflow scope its daily limit,
        unless they have one already (an operator may have raised it, to let a paused run go on)."""
        engine = self.journal.engine
        wf = engine.workflows.get(self.journal.workflow)
        gateway = engine.models
        if wf is None or gateway is None or gateway.ledger is None:
            return
        ledger = gateway.ledger
        daily = wf.daily_budget
        if self.journal.run.shadow:  # a shadow candidate spends against its own [shadow] budget
            plans = engine.shadow_plans.values()
            daily = next((p.daily_budget for p in plans if p.candidate == wf.name and p.daily_budget), daily)
        day = ledger.workflow_day(spending_as(wf.name, self.journal.run.shadow))
        wanted = [(f"run:{self.journal.run_id}", wf.budget), (day, daily)]
        for scope, limit in wanted:
            if limit is None or scope in self._budget_scopes:
                continue
            if (await asyncio.to_thread(ledger.status, scope))["limit"] is None:
                await asyncio.to_thread(ledger.set_limit, scope, limit)
            self._budget_scopes.add(scope)


async def _complete_within_budget(
    journal: Journal, gateway: Gateway, call: Entry, request: LlmRequest
) -> ModelResponse:
    """The reply, applying the workflow's ``on_budget`` when a budget is exhausted."""
    model = request.model
    attempt = 0
    while True:
        attempt += 1
        journal.hold_lease()
        try:
            return await _complete(gateway, journal, model, request, call.n)
        except ModelError as e:
            if not (e.retryable and attempt < request.retry.max_attempts):
                await _fail(journal, call, e)
            await asyncio.sleep(_retry_delay(request.retry, attempt, e))
        except BudgetExceeded as e:
            policy = _policy(journal)
            if policy == "pause":
                await _pause(journal, call, e)
            cheaper = _cheaper(gateway, model) if policy == "degrade" else None
            if cheaper is None:
                await _fail(journal, call, e)
            model = cheaper
        except CrewlineError as e:
            await _fail(journal, call, e)


def _retry_delay(policy: RetryPolicy, attempt: int, e: ModelError) -> float:
    """The policy's backoff, or longer when the provider said how long to wait (bounded by the policy)."""
    asked = getattr(e, "retry_after", None) or 0.0
    return max(policy.delay(attempt), min(float(asked), policy.max_delay))


async def _complete(
    gateway: Gateway, journal: Journal, model: str | None, request: LlmRequest, n: int
) -> ModelResponse:
    asked = CompletionRequest(
        model=model,
        messages=list(request.messages),
        tools=list(request.tools) or None,
        output=request.output,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
    )
    scope = {"run": journal.run_id, "workflow": spending_as(journal.workflow, journal.run.shadow)}
    options = CallOptions(budget_scope=scope, run_id=journal.run_id, step=n, escalate=request.escalate)
    with prompt_for_calls(request.prompt):
        return await gateway.complete(asked, options)


async def _fail(journal: Journal, call: Entry, e: CrewlineError) -> NoReturn:
    kind, message = type(e).__name__, str(e)
    await journal.record(call, Outcome("failed", None, {"type": kind, "message": message}))
    raise StepError(call.n, call.name, kind, message) from e


async def _pause(journal: Journal, call: Entry, e: BudgetExceeded) -> NoReturn:
    """Park the run on a review request until someone raises the budget and approves (or rejects)."""
    preview = {"budget": e.budget, "limit": e.limit, "spent": e.spent, "requested": e.requested}
    # The waiting record keeps no input: it is written with the reply, once the call is made.
    waiting = call.with_input(None)

    def park(conn: Conn) -> None:
        k = count_requests(conn, journal.run_id, call.n)
        request_id = f"{journal.step_key(call.n)}:budget{k}"
        ask = NewRequest(
            request_id=request_id,
            run_id=journal.run_id,
            step_no=call.n,
            kind="budget",
            action=f"continue {call.name} over budget: {e}",
            risk="high",
            preview=preview,
            context=journal.provenance_summary(),
            on_timeout="escalate",
        )
        journal.new_request(conn, ask)
        journal.write(conn, waiting, Outcome("waiting", dump({"request": request_id})))
        journal.park(conn, Park.on_review(request_id))

    await journal.transact(park)
    raise Suspend(f"paused: {e}")


async def _after_pause(journal: Journal, call: Entry, request_id: str) -> None:
    """Resuming a paused call: go on if approved, fail if rejected, keep waiting otherwise."""
    req = await journal.engine.db.read(lambda conn: get_request(conn, request_id))
    if req.status == "approved":
        return
    if req.status == "rejected":
        p = req.preview
        exceeded = BudgetExceeded(
            str(p["budget"]), float(p["limit"]), float(p["spent"]), float(p["requested"])
        )
        await _fail(journal, call, exceeded)
    await journal.suspend(Park.on_review(request_id))


def _note(journal: Journal, n: int, record: dict[str, Any]) -> dict[str, Any]:
    """Add the call to the run's provenance (live and on replay alike)."""
    used = {"kind": "llm", "step": n, "model": record.get("model"), "prompt": record.get("prompt")}
    journal.provenance.append({**used, "cost": record.get("cost")})
    return record


def _overflow(journal: Journal, gateway: Gateway) -> Overflow:
    wf = journal.engine.workflows.get(journal.workflow)
    return wf.overflow if wf is not None and wf.overflow is not None else gateway.config.overflow


def _policy(journal: Journal) -> str:
    wf = journal.engine.workflows.get(journal.workflow)
    return wf.on_budget if wf is not None else "fail"


def _cheaper(gateway: Gateway, model: str | None) -> str | None:
    order = gateway.config.tier_order
    name = model or gateway.config.default
    if name in order and order.index(name) > 0:
        return order[order.index(name) - 1]
    return None


async def build_request(journal: Journal, ask: LlmCall) -> LlmRequest:
    """The request for a ``ctx.llm`` call, with the run's fork overrides applied."""
    overrides = journal.run.overrides or {}
    msgs = as_messages(ask.messages)
    version = None
    model = ask.model
    if ask.prompt is not None:
        spec = _prompt_spec(ask.prompt, overrides)
        rendered, version, meta = await _render(journal, spec, ask.input)
        msgs = (
            *(() if meta.get("system") is None else (_system(str(meta["system"])),)),
            *msgs,
            _user(rendered),
        )
        model = model or meta.get("model")
    elif not msgs:
        raise InvalidInput("ctx.llm needs a prompt= or messages=")
    model = overrides.get("model") or model
    tools = tuple(_model_tool(t) for t in ask.tools or ())
    return LlmRequest(
        model,
        msgs,
        version,
        ask.output,
        tools,
        ask.max_tokens,
        ask.temperature,
        ask.escalate,
        memory=tuple(ask.memory),
        overflow=ask.overflow,
    )


def step_name(prompt: str | None) -> str:
    """``llm:<prompt name>`` (the label or version is not part of it: a fork may vary them), else ``llm``."""
    return "llm" if prompt is None else f"llm:{prompt.split('@')[0]}"


def _prompt_spec(prompt: str, overrides: dict[str, Any]) -> str:
    base = prompt.split("@")[0]
    for spec in overrides.get("prompts", []):
        if str(spec).split("@")[0] == base:
            return str(spec)
    return prompt


async def _render(journal: Journal, spec: str, input: Any) -> tuple[str, str, dict[str, Any]]:
    db = journal.engine.db
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
