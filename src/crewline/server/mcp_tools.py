"""What crewline offers an MCP client: start and follow runs, list and decide reviews, search memory.

Each tool names the action of :data:`~crewline.server.keys.ACTIONS` it performs, so a key may do over
MCP exactly what it may do over the REST API, and each does what the REST route for that action does
(starting a run goes through :func:`~crewline.server.starting.start_prepared`, the same conflict rules
included). Arguments are pydantic models: their JSON schema is what the client sees, and their
validation errors become the tool error's message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..app import App
from ..errors import InvalidInput
from ..flows.run_records import RunRecord
from .auth import check_reach
from .errors import public_error
from .keys import ApiKey
from .starting import prepare_run, start_prepared, storable

__all__ = ["TOOLS", "McpTool"]

_ID = r"^[^\x00-\x1f\x7f]{1,200}$"
_RUN_ID = r"^[^\x00-\x1f\x7f/]{1,200}$"


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartWorkflow(_Arguments):
    workflow: str = Field(pattern=_ID, description="Name of a workflow (see list_workflows).")
    input: Any = Field(default=None, description="The workflow's input, as its input schema describes.")
    idempotency_key: str | None = Field(
        default=None,
        pattern=_ID,
        description="Starting again with the same key returns the first run instead of a new one.",
    )


class RunRef(_Arguments):
    run_id: str = Field(pattern=_RUN_ID, description="The run's id, as start_workflow returned it.")


class NoArguments(_Arguments):
    pass


class ListReviews(_Arguments):
    status: Literal["pending", "approved", "rejected", "expired", "resolved", "closed", "all"] = "pending"
    run_id: str | None = Field(default=None, pattern=_RUN_ID, description="Only this run's reviews.")
    limit: int = Field(default=20, ge=1, le=200)


class DecideReview(_Arguments):
    review_id: str = Field(pattern=_RUN_ID, description="The review's id, from list_reviews.")
    decision: Literal["approve", "reject", "edit"] = Field(
        description="approve; reject; or edit: approve with `edit` as the corrected preview."
    )
    edit: Any = Field(default=None, description="With decision edit: what the run continues with.")
    comment: str | None = Field(default=None, max_length=10_000, pattern=r"^[^\x00]*$")
    seen_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The review's content_hash as shown: the decision fails if the request changed since.",
    )


class SearchMemory(_Arguments):
    query: str = Field(min_length=1, max_length=10_000)
    scopes: list[Annotated[str, Field(pattern=_ID)]] = Field(
        min_length=1, max_length=50, description='Scopes to search, e.g. ["customer:42", "global"].'
    )
    k: int = Field(default=5, ge=1, le=50, description="How many hits.")


Handler = Callable[[App, ApiKey, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class McpTool:
    """One tool: its name, what it does, the action it needs, its arguments and how it is run."""

    name: str
    description: str
    action: str
    arguments: type[_Arguments]
    run: Handler
    read_only: bool = True
    idempotent: bool = False


def _run_view(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "output": run.output,
        "error": public_error(run.error),
        "waiting_for": run.wait_reason,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


async def _start(app: App, key: ApiKey, args: StartWorkflow) -> dict[str, Any]:
    prepared = prepare_run(
        app, args.workflow, args.input, idempotency_key=args.idempotency_key, started_by=key.id
    )
    run_id, created = await start_prepared(prepared, key)
    return {"run_id": run_id, "created": created}


async def _get_run(app: App, key: ApiKey, args: RunRef) -> dict[str, Any]:
    run = await app.get_run(args.run_id)
    check_reach(key, "read runs", run)
    return _run_view(run)


async def _list_workflows(app: App, key: ApiKey, args: NoArguments) -> dict[str, Any]:
    return {
        "workflows": [
            {
                "name": wf.name,
                "input_schema": wf.input_adapter.json_schema() if wf.input_adapter is not None else None,
            }
            for wf in sorted(app.workflows.values(), key=lambda w: w.name)
        ]
    }


async def _list_reviews(app: App, key: ApiKey, args: ListReviews) -> dict[str, Any]:
    status = None if args.status == "all" else args.status
    reviews = await app.reviews.list(status=status, run_id=args.run_id, limit=args.limit)
    return {"reviews": [r.to_json() for r in reviews]}


async def _decide(app: App, key: ApiKey, args: DecideReview) -> dict[str, Any]:
    if args.decision == "edit":
        if args.edit is None:
            raise InvalidInput("decision 'edit' needs `edit`: the corrected preview the run continues with")
        storable(args.edit, "edit")
    elif args.edit is not None:
        raise InvalidInput("`edit` goes with decision 'edit' only; use it to approve with a correction")
    if args.decision == "reject":
        decided = await app.reviews.reject(
            args.review_id, by=key.who, comment=args.comment, seen_hash=args.seen_hash
        )
    else:
        decided = await app.reviews.approve(
            args.review_id, by=key.who, comment=args.comment, edit=args.edit, seen_hash=args.seen_hash
        )
    return decided.to_json()


async def _search(app: App, key: ApiKey, args: SearchMemory) -> dict[str, Any]:
    hits = await app.memory.search(args.query, scope=args.scopes, k=args.k)
    return {"hits": [{**h.to_record(), "text": h.text, "metadata": h.metadata} for h in hits]}


TOOLS: tuple[McpTool, ...] = (
    McpTool(
        "start_workflow",
        "Start a crewline workflow run; returns its run_id at once (follow it with get_run).",
        "start runs",
        StartWorkflow,
        _start,
        read_only=False,
        idempotent=True,
    ),
    McpTool(
        "get_run",
        "A run's status (pending, running, waiting, paused, failed, completed, cancelled) and result.",
        "read runs",
        RunRef,
        _get_run,
    ),
    McpTool(
        "list_workflows",
        "The workflows that can be started, with the JSON schema of each one's input.",
        "list workflows",
        NoArguments,
        _list_workflows,
    ),
    McpTool(
        "list_reviews",
        "Review requests (pending by default): what a run wants to do and waits for a person to decide.",
        "read reviews",
        ListReviews,
        _list_reviews,
    ),
    McpTool(
        "decide_review",
        "Approve, reject, or approve with an edit a pending review; the run then continues.",
        "decide reviews",
        DecideReview,
        _decide,
        read_only=False,
    ),
    McpTool(
        "search_memory",
        "Search crewline's memory (hybrid: vector and full text) in the given scopes.",
        "search memory",
        SearchMemory,
        _search,
    ),
)
