"""The step journal: the durable-step protocol, written once for every step kind.

A step kind asks the journal to :meth:`~Journal.begin` a numbered step. The journal checks that a record
already there names the same step (else :class:`DeterminismError`) and, unless the step is finished,
lets cancellation, an operator's pause and graceful shutdown take effect first. A finished step is
replayed from its record (:meth:`~Journal.replay`); an irreversible step found with only its intent is
never guessed at (:meth:`~Journal.ask_outcome`). Otherwise the step runs live: :meth:`~Journal.go_live` is the one place an
effect is let through (an irreversible call's intent is committed before it), and the outcome is recorded
under the run's lease, in the transaction that marks the step done, failed, intent or waiting
(:meth:`~Journal.record`, or :meth:`~Journal.write` inside :meth:`~Journal.transact`). A step that must
wait parks the run (:meth:`~Journal.park`, :meth:`~Journal.suspend`) on a time, an event, a review or a
child. What every step kind shares (a shadow run that records "would have done X" instead of an
irreversible call, compensations registered when a step finishes) belongs here, not in the step kinds.

A step with a compensation names it in its record in the transaction that marks it done, and each
execution of the run (live or replayed) registers the function with the step's result
(:meth:`~Journal.register`), so an undo runs them in reverse from what this execution saw. A failure an
operator must settle (a failed run under review, a failed compensation) parks the run on a review
request (:meth:`~Journal.ask_operator`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

from ..errors import Cancelled, DeterminismError, StepError
from ..observe.events import Event, ReviewEvent, StepEvent
from ..store.database import Conn
from ..store.payloads import dump, load_json
from .definitions import Effect
from .engine import Engine, LeaseLost, RunSignals, Suspend
from .review_requests import NewRequest, create_request, open_request_id, unknown_outcome_id
from .run_records import RunRecord
from .shadow import spending_as
from .states import Park, StepKind, StepStatus
from .step_store import StepRecord, step_key, write_step

__all__ = ["Compensation", "Entry", "FailedStep", "Journal", "OperatorAsk", "Outcome"]

T = TypeVar("T")


@dataclass(slots=True)  # not frozen: made on every step (see step_call.Call)
class Entry:
    """A step the journal has begun: its number and identity, and its record if it has one."""

    n: int
    name: str
    kind: StepKind
    effect: Effect
    record: StepRecord | None
    started: float
    input_json: bytes | None = None  # what to record as the step's input (tools, model calls)
    compensation: str | None = None  # the name of the compensation it registers once done

    @property
    def finished(self) -> bool:
        """Whether the record holds a final outcome to replay."""
        return self.record is not None and self.record.status in ("done", "failed")

    def with_input(self, input_json: bytes | None) -> Entry:
        return replace(self, input_json=input_json)


@dataclass(frozen=True)
class Compensation:
    """A finished step's registered compensation: called with the step's result to undo it."""

    step_no: int
    step_name: str
    fn: Callable[..., Any]
    result: Any


@dataclass(frozen=True)
class FailedStep:
    """A step that failed: its input, and the type an output given in its place must have."""

    n: int
    name: str
    output_type: str | None
    input: Any


@dataclass(frozen=True)
class OperatorAsk:
    """A failure an operator settles from the review queue: which step, what to show them."""

    kind: str  # failure | compensation
    step_no: int
    action: str
    preview: Any
    preview_type: str | None = None


@dataclass(slots=True)  # not frozen: made on every step (see step_call.Call)
class Outcome:
    """What a step's record says now."""

    status: StepStatus
    output_json: bytes | None = None
    error: dict[str, Any] | None = None
    attempts: int = 1
    shadowed: dict[str, Any] | None = None  # what a shadow run's step would have done instead


class Journal:
    """One run's steps as they are replayed and recorded; shared by every step kind of the run."""

    def __init__(
        self, engine: Engine, run: RunRecord, steps: dict[int, StepRecord], owner: str, signals: RunSignals
    ) -> None:
        self.engine = engine
        self.run = run
        self.run_id = run.id
        self.workflow = run.workflow
        # What shaped this run so far (model calls, prompt versions, memory hits), for review requests.
        self.provenance: list[dict[str, Any]] = []
        self._steps = steps
        self._owner = owner
        self._signals = signals
        self._next = 0
        # Step outcomes written in the open transaction, told to observers once it commits; keyed by what
        # they report on, so a write run again (a batch retried, see Database.write) reports once.
        self._unreported: dict[tuple[str, Any], Event] = {}
        # Compensations registered by the finished steps this execution passed, in step order.
        self.compensations: list[Compensation] = []
        # While compensating, a cancel no longer stops the run between steps: the undo is the cancel.
        self.unwinding = False
        # The last step that failed here, for an operator asked to settle the run's failure.
        self.failed_step: FailedStep | None = None

    @property
    def step_count(self) -> int:
        """How many steps the workflow has reached so far."""
        return self._next

    def step_key(self, n: int, sep: str = ":") -> str:
        """The id of what step ``n`` creates (a review request, a child run, an idempotency key), unique
        across the run's attempts (see :func:`.records.step_key`)."""
        return step_key(self.run_id, n, self.run.attempt, sep)

    def provenance_summary(self) -> dict[str, Any]:
        return {"steps_so_far": self._next - 1, "used": list(self.provenance)}

    # -- begin and replay ------------------------------------------------------------------------------

    async def begin(
        self, name: str, kind: StepKind, effect: Effect = "read", input_json: bytes | None = None
    ) -> Entry:
        """Number the next step, check it against its record, and stop here if the run must stop."""
        self._next += 1
        n = self._next
        rec = self._steps.get(n)
        if rec is not None and (rec.name != name or rec.kind != kind):
            raise DeterminismError(
                f"run {self.run_id} step {n}: the record says {rec.kind} {rec.name!r} but the code now calls "
                f"{kind} {name!r}. The workflow changed under a running run: cancel it, or fork it from step {n}"
            )
        if (rec is None or rec.status not in ("done", "failed")) and self._at_boundary():
            await self._stop_here()
        started = rec.started_at if rec is not None else time.time()
        return Entry(n, name, kind, effect, rec, started, input_json)

    def next_record(self) -> StepRecord | None:
        """The record of the step :meth:`begin` would number next, if it has one."""
        return self._steps.get(self._next + 1)

    def hold_lease(self) -> None:
        """Refuse to go on once the worker can no longer be sure it holds the run: another worker may be
        executing it already, and both would pay for (or make) the same call."""
        if time.monotonic() >= self._signals.lease_until:
            raise LeaseLost(
                f"run {self.run_id}: its lease could not be renewed in time; another worker resumes it"
            )

    def _at_boundary(self) -> bool:
        """Cancellation, pausing and graceful shutdown take effect between steps: whether the run must
        stop here (:meth:`_stop_here`); a cancelled run raises at once."""
        self.hold_lease()
        if self._signals.cancel and not self.unwinding:
            raise Cancelled(f"run {self.run_id} was cancelled")
        return self._signals.pause or self._signals.drain.is_set()

    async def _stop_here(self) -> None:
        if self._signals.pause:
            self.crash_point("before_pause", self._next)
            await self.transact(lambda conn: self.park(conn, Park.paused(time.time())))
            raise Suspend("paused by an operator")
        if self._signals.drain.is_set():
            await self.suspend(Park.released(time.time()))

    def replay(self, entry: Entry) -> Any:
        """A finished step's recorded output, or its recorded failure raised again as a StepError."""
        rec = entry.record
        assert rec is not None and entry.finished, "replay() is for finished steps"
        if rec.status == "failed":
            err = rec.error or {}
            raise StepError(entry.n, rec.name, str(err.get("type")), str(err.get("message")))
        return rec.output

    async def ask_outcome(self, entry: Entry) -> NoReturn:
        """An intent with no result: the call may or may not have happened. Never guess; ask."""
        park = Park.outcome_unknown(entry.n, entry.name)
        ask = NewRequest(
            request_id="",
            run_id=self.run_id,
            step_no=entry.n,
            kind="outcome_unknown",
            action=f"confirm whether step {entry.n} ({entry.name}) happened",
            risk="high",
            preview=None if entry.record is None else entry.record.output,
            context=self.provenance_summary(),
            on_timeout="escalate",
        )

        def park_on_review(conn: Conn) -> None:
            request_id = unknown_outcome_id(conn, self.run_id, entry.n, self.step_key(entry.n))
            self.new_request(conn, replace(ask, request_id=request_id))
            self.park(conn, park)

        await self.transact(park_on_review)
        raise Suspend(park.reason)

    def register(self, entry: Entry, fn: Callable[..., Any], result: Any) -> None:
        """A step that registered a compensation finished (now, or in the record replayed)."""
        self.compensations.append(Compensation(entry.n, entry.name, fn, result))

    async def ask_operator(self, ask: OperatorAsk) -> NoReturn:
        """Park the run on a review request an operator settles (retry, skip, ...); a replay that fails
        the same way finds the pending request instead of making another."""

        def park_on_review(conn: Conn) -> None:
            request_id = open_request_id(conn, self.run_id, ask.step_no, ask.kind)
            new = NewRequest(
                request_id=request_id,
                run_id=self.run_id,
                step_no=ask.step_no,
                kind=ask.kind,
                action=ask.action,
                risk="high",
                preview=ask.preview,
                context=self.provenance_summary(),
                on_timeout="escalate",
                preview_type=ask.preview_type,
            )
            self.new_request(conn, new)
            self.park(conn, Park.on_operator(ask.kind, request_id))

        await self.transact(park_on_review)
        raise Suspend(f"waiting for an operator ({ask.kind} review)")

    # -- live ------------------------------------------------------------------------------------------

    async def go_live(self, entry: Entry, idempotency_key: str, stand_in: Any = None) -> bool:
        """Let the step's effect happen, or not: False when it must not run.

        An irreversible call's intent is committed before it, so a crash between the two leaves "outcome
        unknown" for an operator instead of a second call. In a shadow run an irreversible step never
        runs: it is recorded done with ``stand_in`` as its result (what the workflow continues with) and
        what it would have done (its name, arguments and idempotency key); it registers no compensation,
        since there is nothing to undo.
        """
        if entry.effect != "irreversible":
            return True
        if self.run.shadow:
            arguments = None if entry.input_json is None else load_json(entry.input_json)
            would = {"name": entry.name, "arguments": arguments, "idempotency_key": idempotency_key}
            output = dump(stand_in, f"the shadow stand-in of step {entry.n} ({entry.name})")
            await self.record(replace(entry, compensation=None), Outcome("done", output, shadowed=would))
            return False
        await self.record(entry, Outcome("intent", dump({"idempotency_key": idempotency_key}), None, 0))
        self.crash_point("after_intent", entry.n)
        return True

    def crash_point(self, where: str, step_no: int) -> None:
        self.engine.crash_point(where, step_no)

    # -- record and park -------------------------------------------------------------------------------

    async def transact(self, fn: Callable[[Conn], T], *, keeps: bool = False) -> T:
        """Run ``fn`` in one checkpoint transaction, only while this worker holds the run's lease
        (``keeps``: ``fn`` writes nothing of the run's own row, see :class:`~crewline.store.database.Guard`)."""
        self._unreported.clear()
        result = await self.engine.checkpoint(self.run_id, self._owner, fn, keeps=keeps)
        for event in self._unreported.values():
            self.engine.observers.emit(event)
        self._unreported.clear()
        return result

    async def record(self, entry: Entry, outcome: Outcome) -> None:
        """Record the step's outcome in its own checkpoint transaction."""
        await self.transact(lambda conn: self.write(conn, entry, outcome), keeps=True)

    def write(self, conn: Conn, entry: Entry, outcome: Outcome) -> None:
        """Record the step's outcome inside the caller's transaction (see :meth:`transact`)."""
        write_step(
            conn,
            self.run_id,
            entry.n,
            name=entry.name,
            kind=entry.kind,
            effect=entry.effect,
            status=outcome.status,
            output_json=outcome.output_json,
            error=outcome.error,
            attempts=outcome.attempts,
            started_at=entry.started,
            blob_threshold=self.engine.blob_threshold,
            input_json=entry.input_json,
            compensation=entry.compensation if outcome.status == "done" else None,
            shadowed=outcome.shadowed,
        )
        if self.engine.observers:
            self._unreported["step", entry.n] = self._step_event(entry, outcome)

    def new_request(self, conn: Conn, ask: NewRequest) -> None:
        """Put a request in the review queue inside the caller's transaction (see :meth:`transact`)."""
        create_request(conn, ask, self.engine.blob_threshold)
        if self.engine.observers:
            event = ReviewEvent(ask.request_id, self.run_id, ask.kind, "pending", ask.risk, time.time())
            self._unreported["review", ask.request_id] = event

    def _step_event(self, entry: Entry, outcome: Outcome) -> StepEvent:
        error_type = None if outcome.error is None else str(outcome.error.get("type"))
        return StepEvent(
            run_id=self.run_id,
            workflow=spending_as(self.workflow, self.run.shadow),  # a shadow run's steps count apart
            step=entry.n,
            name=entry.name,
            kind=entry.kind,
            effect=entry.effect,
            status=outcome.status,
            started_at=entry.started,
            duration_s=max(0.0, time.time() - entry.started),
            attempts=outcome.attempts,
            error_type=error_type,
        )

    def park(self, conn: Conn, park: Park) -> None:
        """Release the run inside the caller's transaction; the step kind then raises :class:`Suspend`."""
        self.engine.park(conn, self.run_id, park)

    async def suspend(self, park: Park) -> NoReturn:
        """Park the run in its own transaction and leave the workflow function."""
        await self.transact(lambda conn: self.park(conn, park))
        raise Suspend(park.reason or park.status)

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` keeping the run and its worker slot; a graceful shutdown parks it instead."""
        try:
            await asyncio.wait_for(self._signals.drain.wait(), seconds)
        except TimeoutError:
            return
        await self.suspend(Park.released(time.time() + seconds))
