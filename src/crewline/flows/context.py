"""The context a workflow function receives: durable steps, sleeps, events and child workflows.

Steps are numbered in the order the workflow calls them. A number that already has a finished record
returns (or raises) what was recorded without running anything; a number without one runs live and is
checkpointed before the workflow continues. The record's name and kind must match what the code calls now,
or the run fails with a :class:`DeterminismError` naming both.

:class:`Context` is a thin front: the protocol lives in :mod:`.journal`, each step kind in its own module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .agent import AgentResult, AgentTask, run_agent
from .approvals import Approval, request_approval
from .definitions import Effect, RetryPolicy, Workflow
from .engine import Engine, RunSignals
from .fit import MemoryHit
from .journal import Journal
from .llm import LlmCall, LlmRequest, ModelCalls, build_request, output_value, step_name
from .review_requests import Decision
from .run_records import RunRecord
from .step_call import Call, fn_name, run_call, use_tool
from .step_checkpoint import mark_checkpoint
from .step_child import Child, run_child
from .step_connector import ConnectorSteps
from .step_event import wait_for_event
from .step_flag import read_flag
from .step_sleep import durable_sleep
from .step_store import StepRecord
from .tools import Tool

if TYPE_CHECKING:
    from ..memory.workflow import RunMemory
    from ..models.config import Overflow

__all__ = ["Context"]

T = TypeVar("T")


class Context:
    """Handed to every workflow function as its first argument."""

    def __init__(
        self, engine: Engine, run: RunRecord, steps: dict[int, StepRecord], owner: str, signals: RunSignals
    ) -> None:
        self.run_id = run.id
        self.workflow = run.workflow
        self.run = run
        self._journal = Journal(engine, run, steps, owner, signals)
        self._signals = signals  # the worker's, shared with the journal
        self._models = ModelCalls(self._journal)
        # What shaped this run so far (model calls, prompt versions, memory hits), for review requests.
        self.provenance: list[dict[str, Any]] = self._journal.provenance
        self._memory: RunMemory | None = None

    def provenance_summary(self) -> dict[str, Any]:
        return self._journal.provenance_summary()

    @property
    def journal(self) -> Journal:
        """The run's step journal (for the executor, which settles how the run ends)."""
        return self._journal

    @property
    def memory(self) -> RunMemory:
        """The memory store as durable steps: ``await ctx.memory.search(query, scope=[...], k=5)``."""
        if self._memory is None:
            from ..memory.workflow import RunMemory  # only runs that use memory load it

            engine = self._journal.engine
            self._memory = RunMemory(self, engine.memory, engine.settings.project_dir)
        return self._memory

    @property
    def step_count(self) -> int:
        """How many steps the workflow has reached so far."""
        return self._journal.step_count

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
        compensate: Callable[..., Any] | None = None,
        reconcile: Callable[..., Any] | None = None,
        shadow: Any = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once, durably, and return its (recorded) result.

        ``effect`` says what repeating the call would do: ``read`` (nothing), ``idempotent`` (nothing
        more, e.g. the call carries ``idempotency_key`` to the external API) or ``irreversible``. An
        irreversible step's intent is committed before the call; a crash after it leaves the run waiting
        with "outcome unknown" for an operator instead of calling again. Irreversible steps are not retried
        unless ``retry`` says so; others retry transient errors with jittered exponential backoff.
        If ``fn`` has an ``idempotency_key`` parameter it receives the key (by default ``<run id>:<step>``).

        ``compensate`` undoes the step: once the step is done it is registered, and if the run then fails,
        is cancelled with compensation, or is undone by an operator, the registered compensations run in
        reverse step order, each a durable step called with the step's result (``void_invoice(invoice)``;
        return what an undo needs). It receives an ``idempotency_key`` too if it takes one.

        ``reconcile`` (for an irreversible step) asks the system of record, after a crash left only the
        step's intent, whether the action happened: called like ``fn`` (with its ``idempotency_key``), as a
        recorded step of its own, it returns ``Reconciled.done(output)``, ``Reconciled.not_done()`` (the
        step runs again) or ``Reconciled.unknown()`` (the run waits for an operator). See :mod:`.reconcile`.

        In a shadow run an irreversible step is not called: it records what it would have done (its name,
        arguments and idempotency key) and returns ``shadow`` (None unless given) for the run to go on with.
        """
        call = Call(
            fn,
            args,
            kwargs,
            name or fn_name(fn),
            "step",
            effect,
            retry,
            timeout,
            idempotency_key,
            compensate=compensate,
            reconcile=reconcile,
            shadow=shadow,
        )
        result: T = await run_call(self._journal, call)
        return result

    async def tool(self, tool: Tool | Callable[..., Any], /, **arguments: Any) -> Any:
        """Call a tool as a durable step, with its arguments validated and recorded.

        When the tool's risk (its own, or by effect: irreversible asks, the rest run; the ``[review]``
        policy can only make it stricter) is medium or high, a person approves the call first and may edit
        its arguments; a rejection raises :class:`ActionRejected`.
        """
        return await use_tool(self._journal, tool, arguments)

    def connector(self, name: str) -> ConnectorSteps:
        """The connector ``[connectors.NAME]``, its operations as durable steps:
        ``await ctx.connector("crm").call(get_contact, id="42")``; ``.tools()`` hands them to ``ctx.agent``.

        Each call is a step with the operation's effect, recorded with its arguments and idempotency key
        (never a credential); a replay returns the recorded result, and a step run again after a crash
        sends the same idempotency key.
        """
        return ConnectorSteps(self._journal, self._journal.engine.connectors.get(name))

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
        memory: Sequence[MemoryHit] = (),
        overflow: Overflow | None = None,
    ) -> Any:
        """A durable model call: the reply text, or the validated ``output`` instance.

        ``prompt="triage"`` (or ``"triage@candidate"``, ``"triage@<version>"``) renders the template with
        ``input``; ``messages=`` gives the conversation directly. ``model`` is an alias, tier or
        ``provider/model`` (default: the prompt's, then the gateway's). The step records the reply, model,
        usage, cost and prompt version; a replay returns it without calling the model again. Calls count
        against the run's and the workflow's budgets (see ``on_budget`` on the workflow). A transient
        failure (provider unavailable, timeout, rate limit) is tried again with ``retry``'s backoff
        (default: 3 attempts) before the step fails.

        ``memory=hits`` (from ``ctx.memory.search``) shows the hits with the messages. A request larger
        than the model's context window (known with its price) is fitted by ``overflow``: ``truncate``
        (keep the head and tail of the longest messages), ``summarize`` (put a summary by the cheapest
        tier, a recorded step of its own, in place of the cut) or ``fail``; default the workflow's, then
        ``[models] overflow``. Memory hits go first, lowest score first. The step records what was cut.
        """
        ask = LlmCall(
            prompt,
            input,
            messages,
            output,
            model,
            tools,
            max_tokens,
            temperature,
            escalate,
            memory,
            overflow,
        )

        async def request() -> LlmRequest:
            built = await build_request(self._journal, ask)
            return built if retry is None else replace(built, retry=retry)

        record = await self._models.call(name or step_name(prompt), request)
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
        task = AgentTask(goal, tools, model, max_steps, budget, instructions, name)
        return await run_agent(self._models, task)

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
        ask = Approval(action, preview, risk, timeout, on_timeout, context)
        return await request_approval(self._journal, ask)

    async def checkpoint(self, name: str) -> None:
        """Mark a named point in the run, e.g. ``await ctx.checkpoint("drafted")``: a cheap recorded step.

        ``crewline runs rerun RUN --from drafted`` (or ``runs fork``) executes the run again from here;
        ``drafted#2`` names the second checkpoint of that name when the workflow passes it more than once.
        """
        await mark_checkpoint(self._journal, name)

    # -- time and events -------------------------------------------------------------------------------

    async def sleep(self, duration: str | float) -> None:
        """Sleep durably: a long sleep parks the run, which any worker resumes when it is due."""
        await durable_sleep(self._journal, duration)

    async def wait_for(self, event: str, timeout: float | str | None = None) -> Any:
        """Wait durably for ``app.send_event(run_id, event, payload)`` and return the payload.

        Events sent before the wait are kept and consumed in order. Raises :class:`WaitTimeout` after
        ``timeout``; the run is parked (holding no worker) while it waits.
        """
        return await wait_for_event(self._journal, event, timeout)

    # -- operator flags --------------------------------------------------------------------------------

    async def flag(self, name: str, default: Any = None) -> Any:
        """The value of the operator's flag ``name`` (``crewline flags set``), or ``default`` if unset.

        Read as a step: a replay returns the value this run saw, even after the flag changed.
        """
        return await read_flag(self._journal, name, default)

    # -- child workflows -------------------------------------------------------------------------------

    async def child(
        self, workflow: Workflow | str | Callable[..., Any], input: Any = None, *, run_id: str | None = None
    ) -> Any:
        """Start ``workflow`` as a child run and return its output; raises :class:`RunFailed` if it fails.

        The parent is parked (holding no worker) while the child runs, on any worker.
        """
        return await run_child(self._journal, Child(workflow, input, run_id))
