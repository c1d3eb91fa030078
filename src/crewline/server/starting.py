"""Starting runs from HTTP: validate first, then insert inside a transaction the caller may share.

:meth:`App.start` opens its own transaction; a webhook must record its delivery and start its run in one
commit (so a crash never leaves one without the other), and the API must know whether the run was new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic_core

from ..app import App
from ..errors import InvalidInput
from ..flows.definitions import Workflow
from ..flows.run_records import RunRecord, new_run_id
from ..flows.run_store import insert_run
from ..flows.switches import check_startable
from ..store.database import Conn
from ..store.payloads import dump, load_json
from .errors import ApiError
from .keys import ApiKey

__all__ = ["PreparedRun", "prepare_run", "start_prepared", "storable"]


@dataclass(frozen=True)
class PreparedRun:
    """A run whose workflow and input have been checked; :meth:`insert` creates it."""

    app: App
    workflow: Workflow
    input_json: bytes
    run_id: str | None = None
    idempotency_key: str | None = None
    priority: int | None = None
    started_by: str | None = None  # the API key's id

    def insert(self, conn: Conn) -> tuple[str, bool]:
        """Create the run in ``conn``'s transaction; returns (run id, created)."""
        check_startable(conn, self.workflow.name)
        wf = self.app.engine.serving(conn, self.workflow)
        started, created = insert_run(
            conn,
            run_id=self.run_id or new_run_id(),
            workflow=wf.name,
            version=wf.version,
            queue=wf.queue,
            priority=wf.priority if self.priority is None else self.priority,
            input_json=self.input_json,
            blob_threshold=self.app.engine.blob_threshold,
            idempotency_key=self.idempotency_key,
            started_by=self.started_by,
        )
        if created:
            self.app.engine.start_shadow(conn, wf.name, started, self.input_json)
        return started, created

    def same_as(self, run: RunRecord) -> bool:
        """Whether ``run`` (found by this run's id or idempotency key) was started with this workflow and input."""
        return run.workflow == self.workflow.name and dump(run.input) == dump(load_json(self.input_json))

    def started(self) -> None:
        """Tell in-process workers there is work (call after the commit)."""
        self.app.engine.work_available.set()


def prepare_run(
    app: App,
    workflow: str,
    input: Any,
    *,
    run_id: str | None = None,
    idempotency_key: str | None = None,
    priority: int | None = None,
    started_by: str | None = None,
) -> PreparedRun:
    """Raises :class:`UnknownWorkflow` or :class:`InvalidInput` before anything is written."""
    wf = app.engine.resolve(workflow)
    data = storable(wf.dump_input(wf.validate_input(input)), "input")
    return PreparedRun(app, wf, data, run_id, idempotency_key, priority, started_by)


async def start_prepared(prepared: PreparedRun, key: ApiKey) -> tuple[str, bool]:
    """Start ``prepared`` for ``key``; returns (run id, created).

    Naming an existing run (same id or idempotency key) returns it when it is the same request by a
    caller who may see it, else answers 409: a key must not learn of, or silently get, another's run.
    """
    app = prepared.app
    run_id, created = await app.db.write(prepared.insert, quick=True)
    if created:
        prepared.started()
        return run_id, created
    run = await app.get_run(run_id)
    key_given = prepared.idempotency_key
    by = "Idempotency-Key" if key_given is not None and run.idempotency_key == key_given else "run_id"
    if key.own_runs_only("read runs") not in (None, run.started_by):
        raise ApiError(
            409, "idempotency_conflict", f"this {by} is taken by a run another caller started; use a new one"
        )
    if not prepared.same_as(run):
        raise ApiError(
            409,
            "idempotency_conflict",
            f"this {by} already started run {run_id} of workflow {run.workflow} with another "
            "input; use a new key for a different request",
        )
    return run_id, created


def storable(value: Any, what: str) -> bytes:
    """``value`` as the JSON the store keeps; :class:`InvalidInput` if it has none (e.g. a lone surrogate)."""
    try:
        return dump(value, what)
    except (ValueError, pydantic_core.PydanticSerializationError) as e:
        raise InvalidInput(f"{what} cannot be stored as JSON: {e}") from None
