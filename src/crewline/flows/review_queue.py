"""The review queue as the CLI and the server use it: list, show, decide (each decision is reported to the
engine's observers as a :class:`~crewline.observe.events.ReviewEvent`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, InvalidRunState
from ..observe.events import ReviewEvent
from ..store.database import Conn
from ..store.payloads import dump
from .operations import Outcome, resolve_step
from .recovery import Settlement, settle
from .review_requests import ReviewRequest, decide, get_request, list_requests
from .run_store import FINISHED, lock_run, wake_if_waiting

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ReviewQueue"]


class ReviewQueue:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def list(
        self, *, status: str | None = "pending", run_id: str | None = None, limit: int = 50
    ) -> list[ReviewRequest]:
        return await self._engine.db.read(
            lambda conn: list_requests(conn, status=status, run_id=run_id, limit=limit)
        )

    async def get(self, request_id: str) -> ReviewRequest:
        return await self._engine.db.read(lambda conn: get_request(conn, request_id))

    async def approve(
        self,
        request_id: str,
        *,
        by: str,
        comment: str | None = None,
        edit: Any = None,
        seen_hash: str | None = None,
    ) -> ReviewRequest:
        return await self._decide(request_id, True, by, comment, edit, seen_hash)

    async def reject(
        self, request_id: str, *, by: str, comment: str | None = None, seen_hash: str | None = None
    ) -> ReviewRequest:
        return await self._decide(request_id, False, by, comment, None, seen_hash)

    async def resolve(
        self, request_id: str, outcome: Outcome, *, by: str, output: Any = None
    ) -> ReviewRequest:
        """Settle an "outcome unknown" request: the step happened (done), did not (retry), or failed."""
        req = await self.get(request_id)
        if req.kind != "outcome_unknown":
            raise InvalidInput(f"request {request_id} is an approval: approve or reject it")
        data = dump(output, "output") if outcome == "done" else None
        await self._engine.db.write(
            lambda conn: resolve_step(conn, req.run_id, req.step_no, outcome, data, resolved_by=by)
        )
        self._engine.work_available.set()
        resolved = await self.get(request_id)
        self._report(resolved)
        return resolved

    async def settle(self, request_id: str, answer: Settlement) -> ReviewRequest:
        """Settle a failure review (retry, skip, abandon) or a compensation review (retry, skip, done)."""
        engine = self._engine
        settled = await engine.db.write(lambda conn: settle(conn, request_id, answer, engine.blob_threshold))
        engine.work_available.set()
        self._report(settled)
        return settled

    async def _decide(
        self, request_id: str, approve: bool, by: str, comment: str | None, edit: Any, seen_hash: str | None
    ) -> ReviewRequest:
        engine = self._engine

        def write(conn: Conn) -> ReviewRequest:
            _refuse_if_run_finished(conn, request_id)
            req = decide(
                conn,
                request_id,
                approve=approve,
                by=by,
                comment=comment,
                edit=edit,
                seen_hash=seen_hash,
                blob_threshold=engine.blob_threshold,
            )
            wake_if_waiting(conn, req.run_id, f"approval:{request_id}", req.decided_at or time.time())
            return req

        req = await engine.db.write(write)
        engine.work_available.set()
        self._report(req)
        return req

    def _report(self, req: ReviewRequest) -> None:
        observers = self._engine.observers
        if observers:
            at = req.decided_at or time.time()
            waited = at - req.created_at
            observers.emit(ReviewEvent(req.id, req.run_id, req.kind, req.status, req.risk, at, waited))


_ENDED = {"cancelled": "was cancelled", "failed": "has failed", "completed": "has completed"}


def _refuse_if_run_finished(conn: Conn, request_id: str) -> None:
    """A decision on a run that ended would resume nothing. The run's row is locked first, as a cancel
    does, so a decision and a cancel of the same run are ordered, never both accepted."""
    req = get_request(conn, request_id)
    if req.status not in ("pending", "closed"):
        return  # already decided: that is the answer to give
    run_id = req.run_id
    status, _, _ = lock_run(conn, run_id)
    if status in FINISHED:
        raise InvalidRunState(
            f"run {run_id} {_ENDED.get(status, status)}: request {request_id} can no longer be decided"
        )
