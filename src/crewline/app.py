"""The application object: where workflows are registered and runs are started, inspected and steered.

``App()`` does no I/O until first used: the database is opened (and migrated) on demand, so a module can
define ``app = App()`` and its workflows at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Settings
from .errors import InvalidInput, RunFailed
from .flows.attempts import Attempt, attempt_history, rerun_run
from .flows.definitions import Queue, Workflow
from .flows.engine import Engine, Wiring
from .flows.event_store import send_event
from .flows.executor import log_end
from .flows.operations import Outcome, fork_run, resolve_step
from .flows.recovery import request_compensation
from .flows.review_queue import ReviewQueue
from .flows.run_records import RunRecord, new_run_id
from .flows.run_store import FINISHED, CompensationPlan, cancel_run, get_run, insert_run, list_runs
from .flows.steering import Steering
from .flows.step_store import StepRecord, load_steps
from .flows.switches import check_startable
from .memory import MemoryStore
from .memory.upkeep import keep_purged, purge_every
from .models import Gateway
from .models.call_log import CallRecord, keep_rolled_up, model_call_event
from .models.config import ModelsConfig, Overflow
from .models.ledger import BudgetAlert
from .observe.alert_config import AlertsConfig
from .observe.alerts import Alerting
from .observe.events import Observers
from .observe.model_calls import call_prompt
from .observe.trace_config import TraceSettings
from .store import Conn, Database, open_database
from .store.payloads import dump
from .workers import Worker
from .workers.inbox import InboxWiring, inbox_chores
from .workers.slack_reviews import slack_reviews_for
from .workers.worker import Chore

if TYPE_CHECKING:
    from .observe.metrics import Metrics
    from .observe.traces import Tracer

__all__ = ["App"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
log = logging.getLogger("crewline.app")


class App:
    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        models: Gateway | None = None,
    ) -> None:
        settings = settings or Settings.load()
        if database_url is not None:
            settings = settings.with_(database_url=database_url)
        self.settings = settings
        self._workflows: dict[str, Workflow] = {}
        self._queues: dict[str, Queue] = {"default": Queue("default")}
        self._engine: Engine | None = None
        self._gateway = models
        self._alerting: Alerting | None = None
        # Every component reports to this hub; metrics, traces and alerts observe it.
        self.observers = Observers()
        self._tracer: Tracer | None = None
        self._metrics: Metrics | None = None

    # -- definition ------------------------------------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        version: str | None = None,
        schedule: str | None = None,
        priority: int = 0,
        budget: str | float | None = None,
        daily_budget: str | float | None = None,
        on_budget: str = "fail",
        on_failure: str = "fail",
        overflow: Overflow | None = None,
        shadow_of: str | None = None,
    ) -> Callable[[F], Workflow]:
        """Register an ``async def wf(ctx[, input])`` as a workflow.

        ``schedule`` is a UTC cron expression. ``budget`` ("$0.50/run") caps each run's model spend and
        ``daily_budget`` ("$5") the workflow's per day; ``on_budget`` says what a call that would exceed
        one does: ``fail``, ``degrade`` (next cheaper tier) or ``pause`` (wait in the review queue).
        ``on_failure="review"`` sends a failed run to the review queue, where an operator retries the failed
        step, skips it with an output, or abandons the run (running its compensations).
        ``overflow`` is what its model calls do with a request over the model's context window:
        ``truncate``, ``summarize`` or ``fail`` (default: ``[models] overflow``, itself ``truncate``).
        ``shadow_of="triage"`` runs this workflow in shadow beside every live run of ``triage`` (on its
        ``daily_budget``); a ``[shadow.triage]`` section in crewline.toml takes precedence.
        """

        def register(fn: F) -> Workflow:
            wf = Workflow.define(
                fn,
                name=name,
                queue=queue,
                version=version,
                schedule=schedule,
                priority=priority,
                budget=budget,
                daily_budget=daily_budget,
                on_budget=on_budget,
                on_failure=on_failure,
                overflow=overflow,
                shadow_of=shadow_of,
            )
            if wf.name in self._workflows and self._workflows[wf.name].fn is not fn:
                raise InvalidInput(f"two workflows are named {wf.name!r}; give one a name= of its own")
            self._workflows[wf.name] = wf
            self._queues.setdefault(queue, Queue(queue))
            return wf

        return register

    def queue(self, name: str, *, concurrency: int | None = None) -> Queue:
        """Declare a queue; ``concurrency`` caps its running runs across every worker."""
        if concurrency is not None and concurrency < 1:
            raise InvalidInput(f"queue {name!r}: concurrency must be at least 1")
        q = Queue(name, concurrency)
        self._queues[name] = q
        return q

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    # -- plumbing --------------------------------------------------------------------------------------

    def _build_gateway(self, engine: Engine) -> Gateway:
        """The gateway of ``[models]``, reporting its calls to the hub and its budget crossings to alerts."""
        return Gateway.from_settings(
            engine.settings, engine.db, on_alert=self._budget_crossed, on_call=self.observe_call
        )

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            wiring = Wiring(
                workflows=self._workflows,
                queues=self._queues,
                models=self._gateway,
                build_models=self._build_gateway,
                build_memory=_memory_store,
                observers=self.observers,
            )
            db = open_database(self.settings.database_url)
            _sync_prompts(db, self.settings)
            self._engine = Engine(db, self.settings, wiring)
            self._start_tracing()
        return self._engine

    @property
    def db(self) -> Database:
        return self.engine.db

    @property
    def models(self) -> Gateway:
        """The model gateway (``[models]`` in crewline.toml): ``await app.models.complete(...)``."""
        gateway = self.engine.models
        assert gateway is not None
        return gateway

    @property
    def memory(self) -> MemoryStore:
        """The memory store (``[memory]`` in crewline.toml): ``await app.memory.ingest("docs/", scope="kb")``."""
        return self.engine.memory

    def observe_call(self, record: CallRecord) -> None:
        """Tell the app's observers about a model call: the ``on_call`` of a gateway built by hand."""
        if self.observers:
            event = model_call_event(record, content=self.observers.wants_content)
            prompt = call_prompt()  # named by the llm step making the call, in this task
            self.observers.emit(event if prompt is None else replace(event, prompt=prompt))

    def _start_tracing(self) -> None:
        """Spans over OTLP/HTTP when ``[observe] otlp_endpoint`` is set (a ConfigError names what is wrong)."""
        settings = TraceSettings.from_section(self.settings.sections.get("observe"), os.environ)
        if settings.enabled and self._tracer is None:
            from .observe.traces import Tracer  # needs the `observe` extra, checked by from_section

            self._tracer = Tracer.exporting(settings)
            self.observers.add(self._tracer)
            self.observers.wants_content = self.observers.wants_content or settings.capture_content

    def close(self) -> None:
        if self._engine is not None:
            self._engine.db.close()
            self._engine = None
        if self._tracer is not None:
            self.observers.remove(self._tracer)
            self._tracer.shutdown()
            self._tracer = None

    async def aclose(self) -> None:
        """Close the connectors, the gateway (waiting for its call records) and the database."""
        connectors = None if self._engine is None else self._engine.built_connectors
        if connectors is not None:
            await connectors.aclose()
        gateway = None if self._engine is None else self._engine.built_models
        if self._engine is not None and gateway is not None:
            await gateway.aclose()
            if self._gateway is None:
                self._engine.models = None
        self.close()

    @property
    def alerting(self) -> Alerting:
        """Alert rules and channels (``[alerts]`` in crewline.toml), evaluated by this app's workers."""
        if self._alerting is None:
            from .server.config import ServerConfig

            only_server = Settings(sections={"server": self.settings.sections.get("server") or {}})
            server = ServerConfig.from_settings(only_server)
            self._alerting = Alerting(
                self.db,
                AlertsConfig.from_settings(self.settings),
                public_url=server.public_url,
                observers=self.observers,
            )
        return self._alerting

    def _budget_crossed(self, alert: BudgetAlert) -> None:
        try:
            self.alerting.on_budget(alert)
        except Exception:  # a broken [alerts] section must not fail the model call that crossed it
            log.exception("budget crossing %s at %d%% not recorded as an alert", alert.scope, alert.level)

    @property
    def metrics(self) -> Metrics:
        """The app's Prometheus metrics, observing its events from first use (``crewline serve`` exposes
        them at ``/metrics``, ``crewline worker --metrics-port``)."""
        if self._metrics is None:
            from .observe.metrics import Metrics, firing_alerts  # prometheus_client, for apps that expose it

            budgets = ModelsConfig.parse(self.settings.sections.get("models")).budgets
            self._metrics = Metrics(lambda: self.db, budgets=budgets, alerts_firing=firing_alerts)
            self.observers.add(self._metrics)
        return self._metrics

    @property
    def reviews(self) -> ReviewQueue:
        """The review queue: approval requests and unknown outcomes waiting for a person."""
        return ReviewQueue(self.engine)

    @property
    def steering(self) -> Steering:
        """Pause and resume runs, workflows and queues; disable and enable workflows; set flags."""
        return Steering(self.engine)

    def worker(self, *, concurrency: int = 8, worker_id: str | None = None) -> Worker:
        chores: list[Chore] = [self.alerting.run, partial(keep_rolled_up, self.db)]
        every = purge_every(self.settings.sections.get("memory"))
        if every is not None:
            chores.append(partial(keep_purged, self.db, every=every))
        review = self.settings.sections.get("review")
        slack = slack_reviews_for(review, self.engine.connectors, self.db, 5 * self.settings.poll_interval)
        if slack is not None:
            chores.append(slack.run)
        chores += inbox_chores(self.settings.sections.get("triggers"), self._inbox_wiring())
        return Worker(self.engine, concurrency=concurrency, worker_id=worker_id, chores=chores)

    def _inbox_wiring(self) -> InboxWiring:
        async def start(workflow: str, input: Any, key: str) -> str:
            return await self.start(workflow, input, idempotency_key=key)

        holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        engine = self.engine
        return InboxWiring(engine.db, engine.connectors, start, holder, self.observers)

    # -- runs ------------------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        shadow: bool = False,
        shadow_of: str | None = None,
    ) -> str:
        """Create a run and return its id. The same ``run_id`` or ``idempotency_key`` returns the same run.

        ``shadow`` starts a shadow run: its reads and model calls run, its irreversible steps and tools
        only record what they would have done; ``shadow_of`` names the live run it runs beside."""
        engine = self.engine
        wf = engine.resolve(workflow)
        data = dump(wf.dump_input(wf.validate_input(input)), "input")

        def insert(conn: Conn) -> tuple[str, bool]:
            check_startable(conn, wf.name)
            live = wf if shadow or shadow_of is not None else engine.serving(conn, wf)
            started, created = insert_run(
                conn,
                run_id=run_id or new_run_id(),
                workflow=live.name,
                version=live.version,
                queue=live.queue,
                priority=live.priority if priority is None else priority,
                input_json=data,
                blob_threshold=engine.blob_threshold,
                idempotency_key=idempotency_key,
                shadow=shadow or shadow_of is not None,
                shadow_of=shadow_of,
            )
            if created and not shadow and shadow_of is None:
                engine.start_shadow(conn, live.name, started, data)
            return started, created

        rid, _ = await engine.db.write(insert, quick=True)
        engine.work_available.set()
        return rid

    async def get_run(self, run_id: str) -> RunRecord:
        return await self.db.read(lambda conn: get_run(conn, run_id))

    async def steps(self, run_id: str) -> list[StepRecord]:
        def read(conn: Conn) -> list[StepRecord]:
            get_run(conn, run_id)
            return list(load_steps(conn, run_id).values())

        return await self.db.read(read)

    async def list_runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        after: tuple[float, str] | None = None,
    ) -> list[RunRecord]:
        """Runs newest first; ``after`` is (created_at, id) of the previous page's last run."""
        return await self.db.read(
            lambda conn: list_runs(conn, state=state, workflow=workflow, limit=limit, after=after)
        )

    async def result(self, run_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Any:
        """Wait for the run to finish; its output, or :class:`RunFailed` if it failed or was cancelled.

        A run finished by a worker in this process is seen at once; others by polling, starting every
        ``poll`` seconds and backing off to one second.
        """
        engine = self.engine
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = poll
        while True:
            waiter = engine.finish_waiter(run_id)  # before reading, so an end in between is not missed
            try:
                run = await self.get_run(run_id)
                if run.status in FINISHED:
                    return self._outcome(run)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"run {run_id} is still {run.status} after {timeout}s")
                left = wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), left)
            finally:
                engine.drop_waiter(run_id, waiter)
            wait = min(wait * 2, 1.0)

    def _outcome(self, run: RunRecord) -> Any:
        if run.status != "completed":
            raise RunFailed(run.id, run.status, run.error)
        wf = self._workflows.get(run.workflow)
        if wf is not None and wf.output_adapter is not None:
            return wf.output_adapter.validate_python(run.output)
        return run.output

    async def send_event(self, run_id: str, event: str, payload: Any = None) -> int:
        data = dump(payload, "event payload")
        engine = self.engine
        event_id = await engine.db.write(
            lambda conn: send_event(conn, run_id, event, data, engine.blob_threshold)
        )
        engine.work_available.set()
        return event_id

    async def cancel(self, run_id: str, *, compensate: bool = False, by: str = "operator") -> str:
        """Cancel a run (and its children). A running run stops at its next step boundary.

        With ``compensate`` the compensations its finished steps registered run first, newest first.
        """
        if compensate:
            return await self._compensate(run_id, CompensationPlan("cancel", None, by))
        result = await self.db.write(lambda conn: cancel_run(conn, run_id))
        if result == "cancelled":  # else its worker logs the end when it stops
            log_end(await self.get_run(run_id), "cancelled", None)
        return result

    async def undo(self, run_id: str, *, steps: Sequence[int] | None = None, by: str = "operator") -> str:
        """Run the compensations of the run's finished steps (of ``steps`` only, if given) newest first; the
        run then ends ``cancelled`` (``failed`` if it had failed) saying which steps were compensated."""
        plan = CompensationPlan("undo", None if not steps else tuple(steps), by)
        return await self._compensate(run_id, plan)

    async def _compensate(self, run_id: str, plan: CompensationPlan) -> str:
        result = await self.db.write(lambda conn: request_compensation(conn, run_id, plan))
        self.engine.work_available.set()
        return result

    async def fork(
        self,
        run_id: str,
        from_step: int | str,
        *,
        new_run_id: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> str:
        """Start a new run reusing ``run_id``'s checkpoints before ``from_step``; returns its id.

        ``from_step`` is a step number, a step or checkpoint name, or ``name#2`` (the second step of that
        name); a name alone picks the first.

        ``overrides`` varies the rerun: ``{"model": "strong"}`` sends every model call of the new run to
        another model, ``{"prompts": ["reply@candidate"]}`` renders prompt ``reply`` from that label.
        """
        engine = self.engine
        fork_id = await engine.db.write(
            lambda conn: fork_run(
                conn,
                run_id,
                from_step,
                blob_threshold=engine.blob_threshold,
                new_id=new_run_id,
                overrides=overrides,
            )
        )
        engine.work_available.set()
        return fork_id

    async def rerun(self, run_id: str, from_step: int | str) -> tuple[int, int]:
        """Continue finished run ``run_id`` from ``from_step`` (named as for :meth:`fork`), under its id.

        The steps from there on are kept as the run's earlier attempt (:meth:`attempts`) and executed
        again; returns (the new attempt number, the step number it starts from).
        """
        engine = self.engine
        result = await engine.db.write(lambda conn: rerun_run(conn, run_id, from_step, engine.blob_threshold))
        engine.work_available.set()
        return result

    async def attempts(self, run_id: str) -> list[Attempt]:
        """The earlier attempts of a run that was rerun, oldest first, with the steps each had."""
        return await self.db.read(lambda conn: attempt_history(conn, run_id))

    async def resolve(self, run_id: str, step: int, outcome: Outcome, output: Any = None) -> None:
        """Settle a step whose outcome is unknown (see :func:`crewline.flows.operations.resolve_step`)."""
        data = dump(output, "output") if outcome == "done" else None
        await self.db.write(lambda conn: resolve_step(conn, run_id, step, outcome, data))
        self.engine.work_available.set()


def _sync_prompts(db: Database, settings: Settings) -> None:
    """Bring the project's prompt files into the store (a new file content is a new version)."""
    from .flows.prompts import prompts_dir, sync_prompts

    directory = prompts_dir(settings)
    if directory.is_dir():
        sync_prompts(db, directory)


def _memory_store(engine: Engine) -> MemoryStore:
    section = dict(engine.settings.sections.get("memory") or {})
    gateway = engine.models if engine.settings.sections.get("models") else None
    store = MemoryStore.from_settings(engine.db, section, gateway=gateway)
    store.observers = engine.observers
    return store
