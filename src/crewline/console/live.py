"""What changed, for the console's live updates: one :class:`Broadcast` per server, fed by two sources:
the app's event hub (runs and reviews changed by this process, at once) and, while anyone listens, a poll of the database every ``poll_every`` seconds (runs
changed and reviews opened by other processes: workers, the CLI, another server). A page names the events
it wants: ``run`` (any run; data ``<id> <status>``), ``run-<id>`` (that run; data its status),
``reviews`` (the waiting count changed; data the count), ``alerts``. Each notice names the action a
listener's key must allow to receive it. ``/events`` (:mod:`.events`) streams them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial

from ..app import App
from ..flows.review_requests import pending_requests
from ..flows.run_store import changed_runs
from ..observe.events import AlertEvent, Event, ReviewEvent, RunEvent

__all__ = ["Broadcast", "Notice"]

log = logging.getLogger("crewline.console")

_QUEUE = 1000
# The hub says "completed"; the database and the pages say the run's state.
_RUN_STATES = {"started": "running", "resumed": "running", "parked": "waiting"}


@dataclass(frozen=True)
class Notice:
    event: str
    data: str
    action: str  # who may receive it: an action name of crewline.server.keys.ACTIONS


class Broadcast:
    """Fans notices out to every open stream; an observer on the app's hub."""

    def __init__(self, app: App, poll_every: float = 2.0) -> None:
        self.app = app
        self.poll_every = poll_every
        self._queues: set[asyncio.Queue[Notice]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None

    def observe(self, event: Event) -> None:
        if not self._queues:
            return
        notices: list[Notice] = []
        if isinstance(event, RunEvent):
            notices = self._run(event.run_id, _RUN_STATES.get(event.status, event.status))
        elif isinstance(event, ReviewEvent):
            notices = [Notice("reviews", event.status, "read reviews")]
        elif isinstance(event, AlertEvent):
            notices = [Notice("alerts", event.state, "read alerts")]
        for notice in notices:
            self._send(notice)

    def _run(self, run_id: str, status: str) -> list[Notice]:
        return [
            Notice("run", f"{run_id} {status}", "read runs"),
            Notice(f"run-{run_id}", status, "read runs"),
        ]

    def _send(self, notice: Notice) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(notice)
        else:
            loop.call_soon_threadsafe(self._publish, notice)

    def _publish(self, notice: Notice) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled listener misses notices, not memory
                queue.put_nowait(notice)

    def subscribe(self) -> asyncio.Queue[Notice]:
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Notice] = asyncio.Queue(_QUEUE)
        self._queues.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="crewline-console-poll")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Notice]) -> None:
        self._queues.discard(queue)

    async def _poll(self) -> None:
        since = time.time()
        waiting: int | None = None
        while self._queues:
            await asyncio.sleep(self.poll_every)
            try:
                changes = await self.app.db.read(partial(changed_runs, since=since))
                count, _ = await self.app.db.read(pending_requests)
            except Exception:  # the stream carries on; the next poll tries again
                log.warning("console: polling for changes failed", exc_info=True)
                continue
            for change in changes:
                for notice in self._run(change.id, change.status):
                    self._publish(notice)
                since = max(since, change.updated_at)
            if waiting is not None and count != waiting:
                self._publish(Notice("reviews", str(count), "read reviews"))
            waiting = count
