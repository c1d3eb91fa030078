"""A worker: claims runs, executes them concurrently, keeps their leases alive, fires cron ticks.

Stopping is graceful: no new claims, each run finishes the step it is in and parks itself as pending at
the next step boundary, whatever is still held is released, then :meth:`Worker.run` returns. A worker
that dies instead simply stops heartbeating; its leases lapse and another worker resumes its runs from
their checkpoints. A worker that lives but cannot renew its leases (the database is away) fences itself:
it stops its runs before their leases could lapse, by its own clock, so that no run is ever executed by
two workers at once, each paying for the same model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import TypeVar

from ..errors import DatabaseUnavailable
from ..flows.engine import Engine, RunSignals
from ..flows.executor import execute_run
from ..flows.run_records import RunRecord
from ..flows.run_store import finish_run
from ..observe.events import TriggerEvent
from ..store.database import Conn
from .claim import (
    claim_runs,
    extend_leases,
    held_flags,
    lost_runs,
    register_worker,
    release_runs,
    stop_worker,
)
from .cron import fire_due, next_tick

__all__ = ["Chore", "Worker"]

log = logging.getLogger("crewline.worker")
T = TypeVar("T")
MAINTENANCE_SECONDS = 60.0
# Longer than any call can take with its retries and fallbacks: a reservation this old lost its caller.
STALE_RESERVATION_SECONDS = 15 * 60.0
# Work a worker does besides runs, handed in from above (alert evaluation): runs until the event is set.
Chore = Callable[[asyncio.Event], Coroutine[None, None, None]]


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 8,
        worker_id: str | None = None,
        chores: Sequence[Chore] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tasks: dict[str, tuple[asyncio.Task[str], RunSignals]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._next_cron = 0.0
        self._next_maintenance = 0.0
        self.completed = 0
        self._chores = tuple(chores)

    @property
    def lease_seconds(self) -> float:
        return self.engine.settings.lease_seconds

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (safe to call from a signal handler)."""
        self._stopping.set()

    async def run(self) -> None:
        await self._write(self._register)
        control = asyncio.create_task(self._control_loop(), name="crewline-worker-control")
        fence = asyncio.create_task(self._fence_loop(), name="crewline-worker-fence")
        chores = [asyncio.create_task(chore(self._stopping)) for chore in self._chores]
        try:
            await self._claim_loop()
        finally:
            for _, signals in self._tasks.values():
                signals.drain.set()
            if self._tasks:
                await asyncio.gather(*(t for t, _ in self._tasks.values()), return_exceptions=True)
            if self._cleanups:
                await asyncio.gather(*self._cleanups, return_exceptions=True)
            control.cancel()
            fence.cancel()
            await asyncio.gather(control, fence, *chores, return_exceptions=True)
            try:
                await self._write(self._unregister)
            except DatabaseUnavailable:
                log.warning("worker %s stopped without releasing its leases; they will lapse", self.id)

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            self.engine.work_available.clear()
            self._slot_freed.clear()
            free = self.concurrency - len(self._tasks)
            claimed: list[RunRecord] = []
            if free > 0:
                began = time.monotonic()
                try:
                    claimed = await self._claim(free)
                    backoff = 0.1
                except Exception as e:  # a worker must outlive any one failed claim
                    if isinstance(e, DatabaseUnavailable):
                        log.warning("cannot claim runs, retrying in %.1fs: %s", backoff, e)
                    else:
                        log.exception("claiming runs failed, retrying in %.1fs", backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                for run in claimed:
                    self._start(run, self._sure_until(began))
            if free > 0 and len(claimed) == free:
                continue  # there may be more due right now
            await self._idle()

    async def _claim(self, n: int) -> list[RunRecord]:
        engine = self.engine
        names = sorted(engine.workflows)
        limits = engine.limits()
        return await engine.db.write(
            lambda conn: claim_runs(
                conn, owner=self.id, workflows=names, limits=limits, n=n, lease_seconds=self.lease_seconds
            ),
            quick=True,
        )

    def _start(self, run: RunRecord, lease_until: float) -> None:
        signals = RunSignals(cancel=run.cancel_requested, pause=run.pause_requested, lease_until=lease_until)
        task = asyncio.create_task(
            execute_run(self.engine, run, self.id, signals), name=f"crewline-run-{run.id}"
        )
        self._tasks[run.id] = (task, signals)
        task.add_done_callback(functools.partial(self._finished, run.id))

    def _finished(self, run_id: str, task: asyncio.Task[str]) -> None:
        self._tasks.pop(run_id, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is None and task.result() in ("completed", "failed"):
            self.completed += 1
        elif not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run %s crashed the executor", run_id, exc_info=exc)
            failing = asyncio.create_task(self._fail_crashed(run_id, exc))
            self._cleanups.add(failing)
            failing.add_done_callback(self._cleanups.discard)

    async def _fail_crashed(self, run_id: str, exc: BaseException) -> None:
        """Fail a run whose executor crashed, rather than hold it (and its cancel) forever."""
        reason = f"{type(exc).__name__}: {str(exc)[:2000]}"
        message = f"the worker could not execute this run ({reason}); fork it to try again"
        error = {"type": "ExecutorCrashed", "message": message}
        try:
            done = await self._write(
                lambda c: finish_run(c, run_id, status="failed", error=error, owner=self.id)
            )
        except Exception as e:  # its lease, renewed no more, lapses and another worker takes it
            log.warning("run %s: could not record the crash: %s", run_id, e)
            return
        if done:
            self.engine.run_finished(run_id)

    async def _idle(self) -> None:
        waits = [self._stopping.wait(), self.engine.work_available.wait()]
        if len(self._tasks) >= self.concurrency:
            waits.append(self._slot_freed.wait())
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(
                tasks, timeout=self.engine.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in tasks:
                t.cancel()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- leases, cancellation, cron --------------------------------------------------------------------

    async def _control_loop(self) -> None:
        interval = self._tick
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if time.monotonic() - last_beat >= self.lease_seconds / 3:
                    await self._heartbeat()
                    last_beat = time.monotonic()
                await self._check_requests()
                await self._fire_cron()
                await self._maintain()
            except DatabaseUnavailable as e:
                log.warning("worker %s cannot reach the database: %s", self.id, e)
            except Exception:
                log.exception("worker %s control loop error", self.id)

    def _sure_until(self, began: float) -> float:
        """Until when a lease written by a write that began at ``began`` surely holds, less a margin in
        which the fence, looking twice within it, stops the run before the lease can lapse, not after."""
        return began + self.lease_seconds - self._fence_margin

    @property
    def _fence_margin(self) -> float:
        return min(0.25, self.lease_seconds / 10)

    @property
    def _tick(self) -> float:
        return min(1.0, self.lease_seconds / 3)

    async def _fence_loop(self) -> None:
        """Stop the runs whose leases this worker could not renew in time. Apart from the control loop,
        whose heartbeat waits for the database however long it is away."""
        while True:
            await asyncio.sleep(self._fence_margin / 2)
            now = time.monotonic()
            for run_id, (task, signals) in self._tasks.items():
                if signals.lease_until <= now and not task.done():
                    log.warning("could not renew the lease on run %s in time; stopping it here", run_id)
                    task.cancel()

    async def _heartbeat(self) -> None:
        live = list(self._tasks)
        began = time.monotonic()
        held = await self._write(lambda c: extend_leases(c, self.id, self.lease_seconds, live))
        for run_id in held:
            entry = self._tasks.get(run_id)
            if entry is not None:
                entry[1].lease_until = self._sure_until(began)
        missed = [run_id for run_id in live if run_id not in held]
        if missed:
            # Not renewed: lost to a lapsed lease, or ended / parked by its own task meanwhile. Only the
            # lost ones are stopped; cancelling a task that just recorded its run's end would swallow the
            # notice its waiters get. A run claimed during this write was not in ``live`` at all.
            lost = await self.engine.db.read(lambda c: lost_runs(c, self.id, missed))
            self._drop_lost(lost)

    def _drop_lost(self, lost: set[str]) -> None:
        for run_id in lost:
            entry = self._tasks.get(run_id)
            if entry is not None and not entry[0].done():
                log.warning("lost the lease on run %s; stopping it here", run_id)
                entry[0].cancel()

    async def _check_requests(self) -> None:
        """Tell the runs this worker executes whether an operator asked them to cancel or to pause."""
        if not self._tasks:
            return
        held = await self.engine.db.read(lambda c: held_flags(c, self.id))
        for run_id, (_, signals) in self._tasks.items():
            signals.cancel = signals.cancel or run_id in held.cancel
            signals.pause = run_id in held.pause

    async def _maintain(self) -> None:
        """Now and then: budget reservations left by crashed processes count as spent (worst case)."""
        now = time.monotonic()
        gateway = self.engine.built_models
        if now < self._next_maintenance or gateway is None or gateway.ledger is None:
            return
        self._next_maintenance = now + MAINTENANCE_SECONDS
        expired = await asyncio.to_thread(gateway.ledger.expire_reservations, STALE_RESERVATION_SECONDS)
        if expired:
            log.warning("%d budget reservations outlived their callers; counted as spent", expired)

    async def _fire_cron(self) -> None:
        scheduled = [wf for wf in self.engine.workflows.values() if wf.schedule]
        now = time.time()
        if not scheduled or now < self._next_cron:
            return
        try:
            started = await self._write(
                lambda c: fire_due(c, scheduled, self.engine.blob_threshold, now, self.engine)
            )
        except Exception as e:
            self._report_ticks([wf.name for wf in scheduled], now, type(e).__name__)
            raise
        self._report_ticks([run_id.removeprefix("cron:").rpartition(":")[0] for run_id in started], now)
        if started:
            log.info("cron started %s", ", ".join(started))
            self.engine.work_available.set()
        self._next_cron = min(next_tick(wf.schedule or "", now) for wf in scheduled)

    def _report_ticks(self, workflows: list[str], began: float, error_type: str | None = None) -> None:
        observers = self.engine.observers
        if observers:
            now = time.time()
            for name in workflows:
                observers.emit(TriggerEvent(f"cron:{name}", error_type is None, now, now - began, error_type))

    # -- registration ----------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Conn], T]) -> T:
        return await self.engine.db.write(fn)

    def _register(self, conn: Conn) -> None:
        register_worker(conn, self.id, socket.gethostname(), os.getpid(), self.concurrency)

    def _unregister(self, conn: Conn) -> None:
        released = release_runs(conn, self.id)
        if released:
            log.info("worker %s released %d runs", self.id, released)
        stop_worker(conn, self.id)
