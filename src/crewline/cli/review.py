"""``crewline review``: the queue of approval requests and unknown outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..app import App
from ..errors import InvalidInput, RunNotFound
from ..flows.operations import parse_overrides
from ..flows.recovery import Settlement
from ..flows.review_requests import ReviewRequest
from ..store.payloads import parse_json
from ._common import (
    app_option,
    echo_json,
    errors_as_exit,
    load_app,
    read_json_arg,
    table,
    user,
    when,
    with_app,
)
from ._render import render

__all__ = ["review"]

_by = click.option("--by", default=None, help="Who decides (default: the current user).")
_comment = click.option("--comment", default=None, help="Why; kept with the decision.")
_hash = click.option(
    "--hash", "seen_hash", default=None, help="Refuse if the request differs from this content hash."
)


@click.group()
def review() -> None:
    """Approve, reject, resolve or settle what runs are waiting on."""


@review.command("list")
@app_option
@click.option(
    "--status",
    default="pending",
    show_default=True,
    type=click.Choice(["pending", "approved", "rejected", "expired", "resolved", "closed", "all"]),
)
@click.option("--run", "run_id", default=None, help="Only this run's requests.")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(app_ref: str | None, status: str, run_id: str | None, as_json: bool) -> None:
    """Requests, escalated first, then oldest first."""
    wanted = None if status == "all" else status
    reqs = with_app(lambda app: app.reviews.list(status=wanted, run_id=run_id), load_app(app_ref))
    if as_json:
        echo_json([r.to_json() for r in reqs])
        return
    rows = [
        (
            r.id,
            r.kind,
            r.risk + (" !" if r.escalated else ""),
            r.action[:50],
            r.status,
            when(r.created_at),
            when(r.expires_at),
        )
        for r in reqs
    ]
    click.echo(table(["id", "kind", "risk", "action", "status", "created", "expires"], rows))


@review.command("show")
@app_option
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(app_ref: str | None, request_id: str, as_json: bool) -> None:
    """Everything a reviewer needs: the run's input, the action, the preview, what produced it, its cost."""

    async def go(app: App) -> tuple[ReviewRequest, Any]:
        req = await app.reviews.get(request_id)
        try:
            return req, (await app.get_run(req.run_id)).input
        except RunNotFound:  # deleted by `crewline prune --delete-runs`
            return req, None

    req, run_input = with_app(go, load_app(app_ref))
    if as_json:
        echo_json(req.to_json())
        return
    click.echo(_describe(req, run_input))


@review.command("approve")
@app_option
@click.argument("request_id")
@_by
@_comment
@_hash
@click.option(
    "--edit",
    default=None,
    metavar="TEXT|JSON|@FILE",
    help="Approve with this instead of the preview: plain text where the preview is text, "
    "else JSON; inline or @file.",
)
def approve_cmd(
    app_ref: str | None,
    request_id: str,
    by: str | None,
    comment: str | None,
    seen_hash: str | None,
    edit: str | None,
) -> None:
    """Approve; with --edit the run continues with the edited value."""

    async def go(app: App) -> ReviewRequest:
        value = None if edit is None else _edit_value(edit, await app.reviews.get(request_id))
        return await app.reviews.approve(
            request_id, by=by or user(), comment=comment, edit=value, seen_hash=seen_hash
        )

    req = with_app(go, load_app(app_ref))
    click.echo(f"{req.id} approved by {req.decided_by}; run {req.run_id} resumes")


@review.command("reject")
@app_option
@click.argument("request_id")
@_by
@_comment
@_hash
def reject_cmd(
    app_ref: str | None, request_id: str, by: str | None, comment: str | None, seen_hash: str | None
) -> None:
    """Reject; the run continues knowing it was rejected."""
    req = with_app(
        lambda app: app.reviews.reject(request_id, by=by or user(), comment=comment, seen_hash=seen_hash),
        load_app(app_ref),
    )
    click.echo(f"{req.id} rejected by {req.decided_by}; run {req.run_id} resumes")


@review.command("resolve")
@app_option
@click.argument("request_id")
@click.option("--outcome", type=click.Choice(["done", "retry", "fail"]), required=True)
@click.option("--output", default=None, help="With done: what the step returned (JSON or @file).")
@_by
def resolve_cmd(
    app_ref: str | None, request_id: str, outcome: str, output: str | None, by: str | None
) -> None:
    """Settle an unknown outcome: the step happened (done), did not (retry), or failed (fail)."""
    value = read_json_arg(output, "--output")

    async def go(app: App) -> ReviewRequest:
        return await app.reviews.resolve(request_id, outcome, by=by or user(), output=value)  # type: ignore[arg-type]

    req = with_app(go, load_app(app_ref))
    click.echo(f"{req.id} resolved as {outcome}; run {req.run_id} resumes")


_SETTLE_HELP = """

A failure review (a failed run of an on_failure="review" workflow) is settled with retry, skip or abandon;
a compensation review (a compensation that failed) with retry, skip or done."""


def _settle(app_ref: str | None, request_id: str, answer: Settlement) -> None:
    req = with_app(lambda app: app.reviews.settle(request_id, answer), load_app(app_ref))
    click.echo(f"{req.id} settled ({answer.choice}) by {req.decided_by}; run {req.run_id} resumes")


@review.command("retry", help="Run the failed step (or compensation) again." + _SETTLE_HELP)
@app_option
@click.argument("request_id")
@click.option(
    "--input",
    "input_",
    default=None,
    metavar="JSON|@FILE",
    help="A failed tool call's edited arguments (a JSON object, as `review show` prints them).",
)
@click.option(
    "--set",
    "variations",
    multiple=True,
    metavar="KEY=VALUE",
    help="The rest of the run uses another model or prompt: model=strong, prompt=reply@candidate.",
)
@_by
@_comment
def retry_cmd(
    app_ref: str | None,
    request_id: str,
    input_: str | None,
    variations: tuple[str, ...],
    by: str | None,
    comment: str | None,
) -> None:
    arguments = read_json_arg(input_, "--input")
    with errors_as_exit():
        overrides = parse_overrides(list(variations)) or None
    answer = Settlement("retry", by or user(), comment, arguments=arguments, overrides=overrides)
    _settle(app_ref, request_id, answer)


@review.command("skip", help="Go on past the failed step or compensation." + _SETTLE_HELP)
@app_option
@click.argument("request_id")
@click.option(
    "--output",
    default=None,
    metavar="JSON|@FILE",
    help="What the failed step returns instead (checked against its return type).",
)
@_by
@_comment
def skip_cmd(
    app_ref: str | None, request_id: str, output: str | None, by: str | None, comment: str | None
) -> None:
    value = read_json_arg(output, "--output")
    _settle(app_ref, request_id, Settlement("skip", by or user(), comment, output=value))


@review.command("abandon", help="End a failed run, running its compensations." + _SETTLE_HELP)
@app_option
@click.argument("request_id")
@_by
@_comment
def abandon_cmd(app_ref: str | None, request_id: str, by: str | None, comment: str | None) -> None:
    _settle(app_ref, request_id, Settlement("abandon", by or user(), comment))


@review.command("done", help="Record a failed compensation as done by hand." + _SETTLE_HELP)
@app_option
@click.argument("request_id")
@_by
@_comment
def done_cmd(app_ref: str | None, request_id: str, by: str | None, comment: str | None) -> None:
    _settle(app_ref, request_id, Settlement("done", by or user(), comment))


def _edit_value(edit: str, req: ReviewRequest) -> Any:
    """The edit as the preview has it: text stays text (a reply draft), anything else is JSON."""
    text = edit
    if edit.startswith("@"):
        try:
            text = Path(edit[1:]).read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(
                f"cannot read --edit file {edit[1:]}: {getattr(e, 'strerror', None) or e}"
            ) from None
    if isinstance(req.preview, str) and req.preview_type is None:
        return text
    try:
        return parse_json(text, "--edit")
    except InvalidInput as e:
        shape = "a JSON object" if isinstance(req.preview, dict) else "JSON"
        raise InvalidInput(f"{e}; the preview is {shape}: pass JSON inline or @file.json") from None


def _describe(req: ReviewRequest, run_input: Any) -> str:
    lines = [
        f"request   {req.id} ({req.kind}, risk {req.risk}{', escalated' if req.escalated else ''})",
        f"run       {req.run_id} step {req.step_no}",
        f"action    {req.action}",
        f"status    {req.status}"
        + (f" by {req.decided_by} at {when(req.decided_at)}" if req.decided_by else ""),
        f"expires   {when(req.expires_at)} (then: {req.on_timeout})",
        f"hash      {req.content_hash}",
        "input:",
        *render(run_input),
        "preview:",
        *render(req.preview),
        "context:",
        *render(req.context),
    ]
    if req.comment:
        lines.append(f"comment   {req.comment}")
    choices = {"failure": "retry|skip|abandon", "compensation": "retry|skip|done"}.get(req.kind)
    if choices and req.status == "pending":
        lines.append(f"settle    crewline review {choices} {req.id}  (see --help of each)")
    if req.edit is not None:
        lines += ["edit:", *render(req.edit)]
    return "\n".join(lines)
