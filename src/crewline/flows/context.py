"""The context a workflow function receives: durable steps, sleeps, events and child workflows.

Steps are numbered in the order the workflow calls them. A number that already has a finished record
returns (or raises) what was recorded without running anything; a number without one runs live and is
checkpointed before the workflow continues. The record's name and kind must match what the code calls now,
or the run fails with a :class:`DeterminismError` naming both.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
import pydantic_core

from ..config import parse_duration
from ..errors import (
    ActionRejected,
    Cancelled,
    ConfigError,
    DeterminismError,
    InvalidInput,
    RunFailed,
    StepError,
    WaitTimeout,
)
from ..store.payloads import dump, load, load_json
from .agent import AgentResult, run_agent
from .approvals import request_approval
from .definitions import (
    DEFAULT_RETRY,
    EFFECTS,
    NO_RETRY,
    Effect,
    RetryPolicy,
    Workflow,
    return_adapter,
    return_type,
)
from .engine import Engine, RunSignals, Suspend
from .llm import LlmRequest, build_request, call_llm, output_value, step_name
from .records import RunRecord, StepRecord, insert_run, lock_run, take_event, write_step
from .review import Decision, create_request
from .tools import Tool, as_tool

if TYPE_CHECKING:
    from ..memory.workflow import RunMemory

__all__ = ["Context"]

T = TypeVar("T")
# A sleep shorter than this keeps the run (and its worker slot); a longer one parks the run durably.
INLINE_SLEEP_SECONDS = 2.0


@dataclass(frozen=True)
class _Call:
    n: int
    name: str
    kind: str
    effect: str
    started: float
    input_json: bytes | None


class Context:
    """Handed to every workflow function as its first argument."""

    def __init__(
        self, engine: Engine, run: RunRecord, steps: dict[int, StepRecord], owner: str, signals: RunSignals
    ) -> None:
        self.run_id = run.id
        self.workflow = run.workflow
        self.run = run
        self._engine = engine
        self._steps = steps
        self._owner = owner
        self._signals = signals
        self._next = 0
        # What shaped this run so far (model calls, prompt versions, memory hits), for review requests.
        self.provenance: list[dict[str, Any]] = []
        self._budget_scopes: set[str] = set()
        self._memory: RunMemory | None = None

    def provenance_summary(self) -> dict[str, Any]:
        return {"steps_so_far": self._next - 1, "used": list(self.provenance)}

    @property
    def memory(self) -> RunMemory:
        """The memory store as durable steps: ``await ctx.memory.search(query, scope=[...], k=5)``."""
        if self._memory is None:
            from ..memory.workflow import RunMemory

            self._memory = RunMemory(self, self._engine.memory)
        return self._memory

    @property
    def step_count(self) -> int:
        """How many steps the workflow has reached so far."""
        return self._next

    # -- steps -----------------------------------------------------------------------------------------

    async def step(
        self,
        fn: Callable[..., Awaitable[T]] | Callable[..., T],
        *args: Any,
        name: str | None = None,
        effect: Effect = "read",
        retry: RetryPolicy | None = None,
        timeout: float | str | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once, durably, and return its (recorded) result.

        ``effect`` says what repeating the call would do: ``read`` (nothing), ``idempotent`` (nothing
        more, e.g. the call carries ``idempotency_key`` to the external API) or ``irreversible``. An
        irreversible step's intent is committed before the call; a crash after it leaves the run waiting
        with "outcome unknown" for an operator instead of calling again. Irreversible steps are not retried
        unless ``retry`` says so; others retry transient errors with jittered exponential backoff.
        If ``fn`` has an ``idempotency_key`` parameter it receives the key (by default ``<run id>:<step>``).
        """
        result: T = await self._step(
            fn, args, kwargs, name=name or _fn_name(fn), kind="step", effect=effect, retry=retry,
            timeout=timeout, idempotency_key=idempotency_key,
        )  # fmt: skip
        return result

    async def _step(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, name: str, kind: str,
        effect: str, retry: RetryPolicy | None = None, timeout: float | str | None = None,
        idempotency_key: str | None = None, input_json: bytes | None = None,
    ) -> Any:  # fmt: skip
        """A durable call of ``fn``; ``kind`` is "step", "tool" or "llm", ``input_json`` what to record as input."""
        if effect not in EFFECTS:
            raise ConfigError(f"effect must be one of {', '.join(EFFECTS)}, got {effect!r}")
        n, rec = await self._begin(name, kind)
        adapter = return_adapter(fn)
        if rec is not None:
            return await self._replay_step(n, rec, adapter)
        key = idempotency_key or f"{self.run_id}:{n}"
        if _accepts_key(fn) and "idempotency_key" not in kwargs:
            kwargs["idempotency_key"] = key
        policy = retry or (NO_RETRY if effect == "irreversible" else DEFAULT_RETRY)
        seconds = None if timeout is None else parse_duration(timeout)
        call = _Call(n, name, kind, effect, time.time(), input_json)
        if effect == "irreversible":
            await self._record_call(call, "intent", dump({"idempotency_key": key}), None, 0)
            self._engine.crash_point("after_intent", n)
        result, attempts = await self._attempts(call, fn, args, kwargs, policy, seconds)
        # A plain JSON scalar of the declared type reads back as itself: skip the validation round trip.
        scalar = type(result) in _SCALARS and return_type(fn) in (None, type(result))
        try:
            data = dump(
                result if adapter is None or scalar else adapter.dump_python(result, mode="json"),
                f"the output of step {n} ({name})",
            )
        except InvalidInput as e:  # what cannot be read back must not be recorded as the outcome
            raise await self._fail_call(call, e, attempts) from None
        await self._record_call(call, "done", data, None, attempts)
        self._engine.crash_point("after_step_commit", n)
        if scalar:
            return result
        return load_json(data) if adapter is None else adapter.validate_json(data)

    async def _attempts(
        self, call: _Call, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        policy: RetryPolicy, seconds: float | None,
    ) -> tuple[Any, int]:  # fmt: skip
        attempt = 0
        while True:
            attempt += 1
            try:
                return await _invoke(fn, args, kwargs, seconds), attempt
            except Exception as e:
                if attempt < policy.max_attempts and policy.retryable(e):
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                raise await self._fail_call(call, e, attempt) from e

    async def _fail_call(self, call: _Call, exc: Exception, attempts: int) -> StepError:
        """Record the step as failed with ``exc``; returns the error the workflow sees."""
        kind, message = type(exc).__name__, str(exc)[:4000]
        error = {"type": kind, "message": message, "attempts": attempts}
        await self._record_call(call, "failed", None, error, attempts)
        return StepError(call.n, call.name, kind, message)

    async def _record_call(
        self, call: _Call, status: str, data: bytes | None, error: dict[str, Any] | None, attempts: int
    ) -> None:
        threshold = self._engine.blob_threshold
        await self._engine.checkpoint(
            self.run_id,
            self._owner,
            lambda c: write_step(
                c,
                self.run_id,
                call.n,
                name=call.name,
                kind=call.kind,
                effect=call.effect,
                status=status,
                output_json=data,
                error=error,
                attempts=attempts,
                started_at=call.started,
                blob_threshold=threshold,
                input_json=call.input_json,
            ),
        )

    async def _replay_step(self, n: int, rec: StepRecord, adapter: pydantic.TypeAdapter[Any] | None) -> Any:
        if rec.status == "done":
            return rec.output if adapter is None else adapter.validate_python(rec.output)
        if rec.status == "failed":
            err = rec.error or {}
            raise StepError(n, rec.name, str(err.get("type")), str(err.get("message")))
        # An intent with no result: the call may or may not have happened. Never guess; ask.
        reason = f"outcome unknown: step {n} ({rec.name})"
        engine = self._engine

        def park(conn: Any) -> None:
            create_request(
                conn, request_id=f"{self.run_id}:{n}", run_id=self.run_id, step_no=n, kind="outcome_unknown",
                action=f"confirm whether step {n} ({rec.name}) happened", risk="high", preview=rec.output,
                preview_type=None, context=self.provenance_summary(), on_timeout="escalate", expires_at=None,
                blob_threshold=engine.blob_threshold,
            )  # fmt: skip
            engine.park(conn, self.run_id, status="waiting", reason=reason, event=None, wake_at=None)

        await engine.checkpoint(self.run_id, self._owner, park)
        raise Suspend(reason)

    async def tool(self, tool: Tool | Callable[..., Any], /, **arguments: Any) -> Any:
        """Call a tool as a durable step, with its arguments validated and recorded.

        When the tool's risk (its own, or by effect: irreversible asks, the rest run; the ``[review]``
        policy can only make it stricter) is medium or high, a person approves the call first and may edit
        its arguments; a rejection raises :class:`ActionRejected`.
        """
        t = as_tool(tool)
        kwargs = t.validate(arguments)
        if self._engine.risk_policy.risk_for(t.name, t.default_risk) != "low":
            preview = {"tool": t.name, "arguments": pydantic_core.to_jsonable_python(kwargs)}
            decision = await self.approve(f"tool {t.name}", preview=preview, risk=t.default_risk)
            if not decision.approved:
                raise ActionRejected(f"tool {t.name}", decision.decided_by, decision.comment)
            if isinstance(decision.edited, dict):
                kwargs = t.validate(decision.edited.get("arguments", decision.edited))
        recorded = dump(kwargs)
        return await self._step(
            t.fn, (), kwargs, name=t.name, kind="tool", effect=t.effect, input_json=recorded
        )

    # -- models --------------------------------------------------------------------------------------

    async def llm(
        self,
        prompt: str | None = None,
        *,
        input: Any = None,
        messages: Sequence[Any] | str | None = None,
        output: type[Any] | None = None,
        model: str | None = None,
        tools: Sequence[Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        escalate: bool = False,
        name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """A durable model call: the reply text, or the validated ``output`` instance.

        ``prompt="triage"`` (or ``"triage@candidate"``, ``"triage@<version>"``) renders the template with
        ``input``; ``messages=`` gives the conversation directly. ``model`` is an alias, tier or
        ``provider/model`` (default: the prompt's, then the gateway's). The step records the reply, model,
        usage, cost and prompt version; a replay returns it without calling the model again. Calls count
        against the run's and the workflow's budgets (see ``on_budget`` on the workflow). A transient
        failure (provider unavailable, timeout, rate limit) is tried again with ``retry``'s backoff
        (default: 3 attempts) before the step fails.
        """

        async def request() -> LlmRequest:
            built = await build_request(
                self, prompt, input, messages, output, model, tools, max_tokens, temperature, escalate
            )
            return built if retry is None else replace(built, retry=retry)

        record = await call_llm(self, name or step_name(prompt), request)
        return output_value(record, output)

    async def agent(
        self,
        goal: str,
        *,
        tools: Sequence[Any] = (),
        model: str | None = None,
        max_steps: int = 10,
        budget: float | None = None,
        instructions: str | None = None,
        name: str = "agent",
    ) -> AgentResult:
        """Let a model pursue ``goal`` with ``tools``; every turn and tool call is its own durable step.

        Tool calls go through :meth:`tool` (validated, recorded, approved as the risk policy says). Stops
        after ``max_steps`` turns or once the turns cost ``budget`` USD, with a status that is not success.
        """
        return await run_agent(
            self, goal, tools=tools, model=model, max_steps=max_steps, budget=budget, instructions=instructions,
            name=name,
        )  # fmt: skip

    # -- approvals -------------------------------------------------------------------------------------

    async def approve(
        self,
        action: str,
        *,
        preview: Any = None,
        risk: str | None = None,
        timeout: float | str | None = None,
        on_timeout: str = "reject",
        context: dict[str, Any] | None = None,
    ) -> Decision:
        """Ask a person to approve ``action``; the run is parked (holding no worker) until they decide.

        The request shows ``preview`` and what shaped the run so far (models, prompt versions, memory, cost).
        ``risk`` is combined with the ``[review]`` policy (the stricter wins): ``low`` approves at once,
        ``medium`` asks, ``high`` asks and is never approved by a timeout. After ``timeout`` the request is
        rejected, approved or escalated as ``on_timeout`` says. A reviewer's edit comes back as
        ``decision.edited`` (revalidated as the preview's model when the preview is one).
        """
        return await request_approval(
            self, action, preview=preview, risk=risk, timeout=timeout, on_timeout=on_timeout, context=context
        )

    # -- time and events -------------------------------------------------------------------------------

    async def sleep(self, duration: str | float) -> None:
        """Sleep durably: a long sleep parks the run, which any worker resumes when it is due."""
        seconds = parse_duration(duration)
        n, rec = await self._begin("sleep", "sleep")
        if rec is None:
            until = self._engine.clock() + seconds
            call = _Call(n, "sleep", "sleep", "read", time.time(), None)
            await self._record_call(call, "done", dump({"until": until}), None, 1)
        else:
            until = float(rec.output["until"])
        await self._wait_until(until)

    async def _wait_until(self, until: float) -> None:
        remaining = until - self._engine.clock()
        if remaining <= 0:
            return
        if remaining <= INLINE_SLEEP_SECONDS:
            try:
                await asyncio.wait_for(self._signals.drain.wait(), remaining)
            except TimeoutError:
                return
            await self._park("pending", None, None, time.time() + remaining)
        await self._park("waiting", "sleep", None, time.time() + remaining)

    async def wait_for(self, event: str, timeout: float | str | None = None) -> Any:
        """Wait durably for ``app.send_event(run_id, event, payload)`` and return the payload.

        Events sent before the wait are kept and consumed in order. Raises :class:`WaitTimeout` after
        ``timeout``; the run is parked (holding no worker) while it waits.
        """
        n, rec = await self._begin(event, "event")
        if rec is not None and rec.status == "done":
            return rec.output["payload"]
        if rec is not None and rec.status == "failed":
            raise WaitTimeout(f"run {self.run_id} step {n}: no {event!r} event before the timeout")
        if rec is not None:
            deadline = rec.output.get("deadline")
        else:
            deadline = None if timeout is None else self._engine.clock() + parse_duration(timeout)
        started = rec.started_at if rec is not None else time.time()

        def attempt(conn: Any) -> tuple[str, Any]:
            lock_run(conn, self.run_id)
            found, payload = take_event(conn, self.run_id, event, n)
            if found:
                value = load_json(payload or b"null")
                self._write_wait_step(
                    conn, n, event, "event", "done", dump({"payload": value}), None, started
                )
                return "done", value
            if deadline is not None and self._engine.clock() >= deadline:
                error = {"type": "WaitTimeout", "message": f"no {event!r} event before the timeout"}
                self._write_wait_step(conn, n, event, "event", "failed", None, error, started)
                return "timeout", None
            self._write_wait_step(
                conn, n, event, "event", "waiting", dump({"deadline": deadline}), None, started
            )
            wake = None if deadline is None else time.time() + max(0.0, deadline - self._engine.clock())
            self._engine.park(
                conn, self.run_id, status="waiting", reason=f"event:{event}", event=event, wake_at=wake
            )
            return "parked", None

        outcome, payload = await self._engine.checkpoint(self.run_id, self._owner, attempt)
        if outcome == "done":
            return payload
        if outcome == "timeout":
            raise WaitTimeout(f"run {self.run_id} step {n}: no {event!r} event before the timeout")
        raise Suspend(f"waiting for event {event!r}")

    # -- child workflows -------------------------------------------------------------------------------

    async def child(self, workflow: Workflow | str | Callable[..., Any], input: Any = None, *,
                    run_id: str | None = None) -> Any:  # fmt: skip
        """Start ``workflow`` as a child run and return its output; raises :class:`RunFailed` if it fails.

        The parent is parked (holding no worker) while the child runs, on any worker.
        """
        wf = self._engine.resolve(workflow)
        n, rec = await self._begin(wf.name, "child")
        if rec is not None and rec.status in ("done", "failed"):
            return self._child_outcome(rec.status, rec.output, rec.error, wf)
        child_id = rec.output["child"] if rec is not None else (run_id or f"{self.run_id}.{n}")
        input_json = dump(wf.dump_input(wf.validate_input(input))) if rec is None else b"null"
        started = rec.started_at if rec is not None else time.time()
        engine = self._engine

        def attempt(conn: Any) -> tuple[str, Any, Any]:
            if rec is None:
                insert_run(conn, run_id=child_id, workflow=wf.name, version=wf.version, queue=wf.queue,
                           priority=wf.priority, input_json=input_json, blob_threshold=engine.blob_threshold,
                           parent_id=self.run_id, parent_step=n)  # fmt: skip
            row = conn.one("SELECT status, output, output_blob, error FROM runs WHERE id = ?", (child_id,))
            status = row[0]
            if status == "completed":
                output = load(conn, row[1], row[2])
                self._write_wait_step(conn, n, wf.name, "child", "done", dump(output), None, started)
                return "done", output, None
            if status in ("failed", "cancelled"):
                child_error = load_json(row[3]) if row[3] else None
                error = {"type": "RunFailed", "child": child_id, "status": status, "error": child_error}
                self._write_wait_step(conn, n, wf.name, "child", "failed", None, error, started)
                return "failed", None, error
            self._write_wait_step(
                conn, n, wf.name, "child", "waiting", dump({"child": child_id}), None, started
            )
            engine.park(
                conn, self.run_id, status="waiting", reason=f"child:{child_id}", event=None, wake_at=None
            )
            return "parked", None, None

        outcome, output, error = await engine.checkpoint(self.run_id, self._owner, attempt)
        engine.work_available.set()
        if outcome == "parked":
            raise Suspend(f"waiting for child run {child_id}")
        return self._child_outcome(outcome, output, error, wf)

    @staticmethod
    def _child_outcome(status: str, output: Any, error: dict[str, Any] | None, wf: Workflow) -> Any:
        if status in ("done", "completed"):
            return output if wf.output_adapter is None else wf.output_adapter.validate_python(output)
        err = error or {}
        raise RunFailed(str(err.get("child")), str(err.get("status", "failed")), err.get("error"))

    # -- plumbing --------------------------------------------------------------------------------------

    async def _begin(self, name: str, kind: str) -> tuple[int, StepRecord | None]:
        self._next += 1
        n = self._next
        rec = self._steps.get(n)
        if rec is not None and (rec.name != name or rec.kind != kind):
            raise DeterminismError(
                f"run {self.run_id} step {n}: the record says {rec.kind} {rec.name!r} but the code now calls "
                f"{kind} {name!r}. The workflow changed under a running run: cancel it, or fork it from step {n}"
            )
        if rec is None or rec.status not in ("done", "failed"):
            await self._boundary()
        return n, rec

    async def _boundary(self) -> None:
        """Cancellation and graceful shutdown take effect here, between steps."""
        if self._signals.cancel:
            raise Cancelled(f"run {self.run_id} was cancelled")
        if self._signals.drain.is_set():
            await self._park("pending", None, None, time.time())

    async def _park(self, status: str, reason: str | None, event: str | None, wake_at: float | None) -> None:
        await self._engine.checkpoint(
            self.run_id,
            self._owner,
            lambda c: self._engine.park(
                c, self.run_id, status=status, reason=reason, event=event, wake_at=wake_at
            ),
        )
        raise Suspend(reason or status)

    def _write_wait_step(
        self, conn: Any, n: int, name: str, kind: str, status: str, data: bytes | None,
        error: dict[str, Any] | None, started: float,
    ) -> None:  # fmt: skip
        """Record an event or child step (inside the caller's transaction)."""
        write_step(conn, self.run_id, n, name=name, kind=kind, effect="read", status=status, output_json=data,
                   error=error, attempts=1, started_at=started, blob_threshold=self._engine.blob_threshold)  # fmt: skip


async def _invoke(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float | None
) -> Any:
    async def call() -> Any:
        if _is_async(fn):
            return await fn(*args, **kwargs)
        result = await asyncio.to_thread(fn, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    if seconds is None:
        return await call()
    async with asyncio.timeout(seconds):
        return await call()


_SCALARS = (int, str, float, bool, type(None))


@lru_cache(maxsize=1024)
def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


@lru_cache(maxsize=1024)
def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
