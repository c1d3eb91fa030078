"""The engine's shared state and its checkpoint writes.

:class:`Engine` is what a running workflow's context and the workers share: the database, the settings,
the registered workflows and queues, and the crash-point hook used by durability tests and chaos drills.
Every checkpoint write goes through :meth:`Engine.checkpoint`, which first checks in the same transaction
that this worker still holds the run's lease, so a worker that lost its lease can never record a step.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..config import Settings
from ..connectors.registry import Connectors
from ..errors import ConfigError, GuardFailed, UnknownWorkflow
from ..observe.events import Observers
from ..secret_store import Credentials
from ..store.database import Conn, Database, Guard
from .definitions import Queue, Workflow
from .review_requests import RiskPolicy
from .run_store import assert_leases, held_leases, park_run
from .shadow import Beside, ShadowPlan, parse_shadow, promoted, shadow_beside
from .states import Park

if TYPE_CHECKING:
    from ..memory import MemoryStore
    from ..models import Gateway

__all__ = ["Engine", "LeaseLost", "RunSignals", "Suspend", "Wiring"]

T = TypeVar("T")
CrashHook = Callable[[str, int], None]
CRASH_POINTS = ("after_intent", "after_step_commit", "before_run_completion", "before_pause")


class Suspend(BaseException):
    """The run parked itself (sleep, event, child, outcome unknown, drain); its state is committed."""


class LeaseLost(Exception):
    """Another worker took this run over; this one must stop touching it."""


@dataclass
class RunSignals:
    """What a worker tells a run it is executing."""

    cancel: bool = False
    pause: bool = False  # an operator asked the run to pause at its next step boundary
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    # Monotonic time until which the worker is sure its lease on the run holds (it renewed it in time);
    # past it another worker may have taken the run over, so this one must not start anything more.
    lease_until: float = math.inf


def kill_at(spec: str) -> CrashHook:
    """A crash hook that SIGKILLs this process at ``point`` or ``point:step`` (see Settings.crash_point)."""
    point, _, step = spec.partition(":")
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}: use one of {', '.join(CRASH_POINTS)}")
    at = int(step) if step else None

    def hook(where: str, step_no: int) -> None:
        if where == point and (at is None or at == step_no):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


@dataclass(frozen=True)
class Wiring:
    """What an engine is built with beyond its database and settings.

    ``workflows`` and ``queues`` are the registering app's own dicts, shared so that later registrations
    are seen. The gateway is ``models`` if given, else built by ``build_models`` on first use (so apps
    without models never parse their config); the memory store is built by ``build_memory`` on first use.
    """

    workflows: dict[str, Workflow] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    models: Gateway | None = None
    build_models: Callable[[Engine], Gateway] | None = None
    build_memory: Callable[[Engine], MemoryStore] | None = None
    build_connectors: Callable[[Engine], Connectors] | None = None
    observers: Observers = field(default_factory=Observers)  # the app's event hub


class Engine:
    def __init__(self, db: Database, settings: Settings, wiring: Wiring | None = None) -> None:
        wiring = wiring or Wiring()
        self.db = db
        self.settings = settings
        self.workflows = wiring.workflows
        self.queues = wiring.queues
        self.crash_hook: CrashHook | None = kill_at(settings.crash_point) if settings.crash_point else None
        self.work_available = asyncio.Event()
        self.risk_policy = RiskPolicy.from_section(settings.sections.get("review"))
        self._models = wiring.models
        self._build_models = wiring.build_models
        self._memory: MemoryStore | None = None
        self._build_memory = wiring.build_memory
        self._connectors: Connectors | None = None
        self._build_connectors = wiring.build_connectors
        self._finish_waiters: dict[str, list[asyncio.Future[None]]] = {}
        # What "now" is for durable sleeps and wait deadlines; tests move it to skip time.
        self.clock: Callable[[], float] = time.time
        # Where runs and steps report what happened (the app's hub; empty unless something observes).
        self.observers = wiring.observers
        self._shadow_plans: dict[str, ShadowPlan] | None = None

    @property
    def shadow_plans(self) -> dict[str, ShadowPlan]:
        """Shadow plans by live workflow: ``@app.workflow(shadow_of=...)``, overridden by
        ``[shadow.WORKFLOW]`` of crewline.toml (read on first use)."""
        if self._shadow_plans is None:
            declared = {
                wf.shadow_of: ShadowPlan(wf.shadow_of, wf.name, wf.daily_budget)
                for wf in self.workflows.values()
                if wf.shadow_of is not None
            }
            self._shadow_plans = {**declared, **parse_shadow(self.settings.sections.get("shadow"))}
        return self._shadow_plans

    def serving(self, conn: Conn, wf: Workflow) -> Workflow:
        """The workflow that serves ``wf``'s live triggers: its shadow candidate once promoted."""
        plan = self.shadow_plans.get(wf.name)
        if plan is None or not promoted(conn, plan):
            return wf
        return self.workflows.get(plan.candidate, wf)

    def start_shadow(self, conn: Conn, workflow: str, run_id: str, input_json: bytes) -> str | None:
        """Beside live run ``run_id``, just created in ``conn``'s transaction, the shadow run its
        ``[shadow]`` plan asks for; every live trigger calls this."""
        plan = self.shadow_plans.get(workflow)
        if plan is None:
            return None
        candidate = self.workflows.get(plan.candidate)
        if candidate is None:
            raise ConfigError(
                f"[shadow.{workflow}] workflow = {plan.candidate!r} is not a registered workflow; "
                f"register it (@app.workflow) or remove the section"
            )
        beside = Beside(plan, run_id, input_json, candidate.version, candidate.queue, self.blob_threshold)
        return shadow_beside(conn, beside)

    def crash_point(self, where: str, step_no: int) -> None:
        if self.crash_hook is not None:
            self.crash_hook(where, step_no)

    async def checkpoint(self, run_id: str, owner: str, fn: Callable[[Conn], T], *, keeps: bool = False) -> T:
        """Run ``fn`` in a group-committed transaction, only while ``owner`` holds the run's lease;
        ``keeps`` says ``fn`` leaves the run's row (its lease) alone, as a step's record does."""
        try:
            return await self.db.write(
                fn, guard=Guard(held_leases, (run_id, owner), assert_leases, keeps), quick=True
            )
        except GuardFailed:
            raise LeaseLost(f"run {run_id} is no longer held by worker {owner}") from None

    @property
    def models(self) -> Gateway | None:
        """The model gateway, built on first use (so apps without models never parse their config)."""
        if self._models is None and self._build_models is not None:
            self._models = self._build_models(self)
        return self._models

    @models.setter
    def models(self, gateway: Gateway | None) -> None:
        self._models = gateway

    @property
    def built_models(self) -> Gateway | None:
        """The gateway if it was given or already built; never builds one (for closing and upkeep)."""
        return self._models

    @property
    def memory(self) -> MemoryStore:
        """The memory store, built on first use."""
        if self._memory is None:
            if self._build_memory is None:
                raise ConfigError("this engine has no memory store configured")
            self._memory = self._build_memory(self)
        return self._memory

    @memory.setter
    def memory(self, store: MemoryStore) -> None:
        self._memory = store

    @property
    def connectors(self) -> Connectors:
        """The ``[connectors.*]`` of the settings, each built on first use (``ctx.connector(name)``)."""
        if self._connectors is None:
            build = self._build_connectors or _connectors_of_settings
            self._connectors = build(self)
        return self._connectors

    @connectors.setter
    def connectors(self, connectors: Connectors) -> None:
        self._connectors = connectors

    @property
    def built_connectors(self) -> Connectors | None:
        """The connectors if already built; never builds them (for closing)."""
        return self._connectors

    def finish_waiter(self, run_id: str) -> asyncio.Future[None]:
        """A future resolved when this process records the run's end (others are seen by polling)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finish_waiters.setdefault(run_id, []).append(fut)
        return fut

    def drop_waiter(self, run_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._finish_waiters.get(run_id, [])
        if fut in waiters:
            waiters.remove(fut)
        if not waiters:
            self._finish_waiters.pop(run_id, None)

    def run_finished(self, run_id: str) -> None:
        for fut in self._finish_waiters.pop(run_id, []):
            if not fut.done():
                fut.set_result(None)

    def resolve(self, workflow: Workflow | str | Callable[..., object]) -> Workflow:
        """The registered workflow for a :class:`Workflow`, its name, or its function."""
        if isinstance(workflow, Workflow):
            return workflow
        name = workflow if isinstance(workflow, str) else getattr(workflow, "__name__", repr(workflow))
        found = self.workflows.get(name)
        if found is None:
            known = ", ".join(sorted(self.workflows)) or "none registered"
            raise UnknownWorkflow(f"unknown workflow {name!r} (known: {known})")
        return found

    def limits(self) -> dict[str, int]:
        return {q.name: q.concurrency for q in self.queues.values() if q.concurrency is not None}

    @property
    def blob_threshold(self) -> int:
        return self.settings.blob_threshold

    def park(self, conn: Conn, run_id: str, park: Park) -> None:
        """Release the run: it waits (or is pending again) and no worker holds it."""
        park_run(conn, run_id, park)


def _connectors_of_settings(engine: Engine) -> Connectors:
    credentials = Credentials.from_settings(engine.db, engine.settings)
    return Connectors(engine.settings.sections.get("connectors"), credentials, engine.observers)
