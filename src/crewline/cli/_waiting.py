"""What ``crewline run`` says about a run it started: who will execute it, and how waiting for it ended.

A run started from the CLI is executed by a worker on the same database; with none running it would
stay pending without a word, so the CLI says which database the run is in and whether any worker
watches it. ``--wait`` returns as soon as the run needs a person (a review request), since no amount of
waiting finishes it then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import click

from ..app import App
from ..flows.review_requests import ReviewRequest
from ..flows.run_store import FINISHED
from ..workers.claim import live_workers
from ._common import database_label

__all__ = ["WaitEnd", "no_worker_note", "timed_out_message", "wait_for_run", "waiting_on_person"]

# Polling for a review request between the engine's own waits: often enough that a person sees it at once.
_SLICE = 1.0


@dataclass(frozen=True)
class WaitEnd:
    """How ``--wait`` ended: the run's output (it completed) or the review request it waits on."""

    output: Any = None
    review: ReviewRequest | None = None


async def wait_for_run(app: App, run_id: str, timeout: float | None) -> WaitEnd:
    """Wait until the run finishes (its output; :class:`RunFailed` if it failed) or waits on a person.

    Raises TimeoutError when ``timeout`` passes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _SLICE if deadline is None else max(0.0, min(_SLICE, deadline - time.monotonic()))
        try:
            return WaitEnd(output=await app.result(run_id, timeout=left))
        except TimeoutError:
            pass
        review = await _pending_review(app, run_id)
        if review is not None:
            return WaitEnd(review=review)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(run_id)


async def _pending_review(app: App, run_id: str) -> ReviewRequest | None:
    run = await app.get_run(run_id)
    if run.status in FINISHED or run.status in ("pending", "running"):
        return None
    pending = await app.reviews.list(status="pending", run_id=run_id)
    return pending[0] if pending else None


def waiting_on_person(run_id: str, review: ReviewRequest) -> str:
    """What to tell the person a run waits on: the request and the commands that decide it."""
    if review.kind == "outcome_unknown":
        how = f"settle it with `crewline review resolve {review.id} --outcome done|retry|fail`"
    else:
        how = f"approve it with `crewline review approve {review.id}` or reject it with `crewline review reject {review.id}`"
    return (
        f"run {run_id} waits for a person: review {review.id} ({review.action}, risk {review.risk}).\n"
        f"See it with `crewline review show {review.id}`; {how}."
    )


async def no_worker_note(app: App) -> str | None:
    """A warning when no worker runs on the app's database (so a run started there would not move)."""
    if await _workers(app):
        return None
    return (
        f"no worker is running on the database {database_label(app.settings.database_url)}: the run "
        "stays pending until one does; start `crewline worker` (or `crewline serve`) on this project"
    )


async def timed_out_message(app: App, run_id: str, timeout: float | None) -> str:
    run = await app.get_run(run_id)
    status = run.status + (f" ({run.wait_reason})" if run.wait_reason else "")
    text = f"run {run_id} is still {status} after {timeout:g}s"
    if run.status == "pending":
        workers = await _workers(app)
        text += (
            f"; no worker has claimed it ({workers} running on the database "
            f"{database_label(app.settings.database_url)})"
        )
        if not workers:
            text += ": start `crewline worker` (or `crewline serve`) on this project"
    return f"{text}; it keeps going, check it with `crewline runs show {run_id}`"


async def _workers(app: App) -> int:
    lease = app.settings.lease_seconds
    return await app.db.read(lambda conn: live_workers(conn, lease))


def echo_err(text: str) -> None:
    click.echo(f"crewline: {text}", err=True)
