"""The review queue: requests for a human decision, and the decisions, with what the reviewer saw.

A request is created by ``ctx.approve`` (kind ``approval``), by an irreversible step whose outcome is
unknown after a crash (kind ``outcome_unknown``), by a failed run of an ``on_failure="review"`` workflow
(kind ``failure``) or by a compensation that failed (kind ``compensation``). It holds the intended action, the preview, and the
provenance of the run so far (models, prompt versions, memory used, cost). A decision records who, when,
the hash of what they were shown, a comment and an optional edit, then makes the parked run due.
This module alone issues SQL on ``reviews``.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import hashlib
import importlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from ..errors import ConfigError, InvalidInput, InvalidRunState, ReviewNotFound
from ..store.database import Conn
from ..store.dialects import FOR_UPDATE, Percentiles
from ..store.payloads import dump, load, store_payload

__all__ = [
    "RISKS",
    "Decision",
    "NewRequest",
    "ReviewRequest",
    "ReviewTimes",
    "RiskPolicy",
    "close_open_requests",
    "count_requests",
    "create_request",
    "decide",
    "edit_problems",
    "escalate",
    "get_request",
    "list_requests",
    "lock_request",
    "open_request_id",
    "pending_requests",
    "preview_schema",
    "recent_decisions",
    "review_times",
    "settle_request",
    "shown_hash",
]

Risk = Literal["low", "medium", "high"]
RISKS: tuple[str, ...] = ("low", "medium", "high")
ON_TIMEOUT: tuple[str, ...] = ("reject", "approve", "escalate")


@dataclass(frozen=True)
class Decision:
    """What the run continues with after an approval step."""

    approved: bool
    status: str  # approved | rejected | expired | auto
    edited: Any = None
    comment: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RiskPolicy:
    """Risk per action or tool name from ``[review]`` in crewline.toml; the stricter of policy and code wins.

    ``[review] default = "medium"`` and ``[review.risk] "send_*" = "high"`` (glob patterns on the name).
    """

    def __init__(self, rules: Mapping[str, str] | None = None, default: str = "medium") -> None:
        for pattern, risk in {**(rules or {}), "default": default}.items():
            if risk not in RISKS:
                raise ConfigError(f"[review] risk for {pattern!r} is {risk!r}: use low, medium or high")
        self.rules = dict(rules or {})
        self.default = default

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> RiskPolicy:
        section = section or {}
        return cls(section.get("risk") or {}, str(section.get("default", "medium")))

    def risk_for(self, name: str, declared: str | None = None) -> str:
        matched = [risk for pattern, risk in self.rules.items() if fnmatch.fnmatchcase(name, pattern)]
        if declared is not None and declared not in RISKS:
            raise InvalidInput(f"risk must be low, medium or high, got {declared!r}")
        candidates = matched + ([declared] if declared else [])
        if not candidates:
            return self.default
        return max(candidates, key=RISKS.index)


@dataclass
class ReviewRequest:
    id: str
    run_id: str
    step_no: int
    kind: str
    action: str
    risk: str
    preview: Any
    preview_type: str | None
    context: dict[str, Any]
    status: str  # pending | approved | rejected | expired | resolved | closed
    escalated: bool
    on_timeout: str
    expires_at: float | None
    decided_by: str | None
    decided_at: float | None
    comment: str | None
    shown_hash: str | None
    edit: Any
    outcome: str | None
    created_at: float

    @property
    def content_hash(self) -> str:
        return shown_hash(self.action, self.preview, self.context)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "content_hash": self.content_hash}


def shown_hash(action: str, preview: Any, context: Any) -> str:
    """The hash of what a reviewer is shown: the action, the preview and the context, canonically."""
    canonical = json.dumps(
        {"action": action, "preview": preview, "context": context}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


_COLUMNS = (
    "id, run_id, step_no, kind, action, risk, preview, preview_blob, preview_type, context, status, escalated, "
    "on_timeout, expires_at, decided_by, decided_at, comment, shown_hash, edit, edit_blob, outcome, created_at"
)


def _from_row(conn: Conn, r: tuple[Any, ...]) -> ReviewRequest:
    return ReviewRequest(
        id=r[0],
        run_id=r[1],
        step_no=r[2],
        kind=r[3],
        action=r[4],
        risk=r[5],
        preview=load(conn, r[6], r[7]),
        preview_type=r[8],
        context=json.loads(r[9]) if r[9] else {},
        status=r[10],
        escalated=bool(r[11]),
        on_timeout=r[12],
        expires_at=r[13],
        decided_by=r[14],
        decided_at=r[15],
        comment=r[16],
        shown_hash=r[17],
        edit=load(conn, r[18], r[19]),
        outcome=r[20],
        created_at=r[21],
    )


@dataclass(frozen=True)
class NewRequest:
    """A request for a decision, as a step kind asks for it."""

    request_id: str
    run_id: str
    step_no: int
    kind: str  # approval | budget | outcome_unknown
    action: str
    risk: str
    preview: Any
    context: dict[str, Any]
    on_timeout: str
    preview_type: str | None = None
    expires_at: float | None = None


def create_request(conn: Conn, req: NewRequest, blob_threshold: int) -> None:
    """Create the request unless it exists (replays and retried commits create nothing twice)."""
    inline, blob = store_payload(conn, dump(req.preview), blob_threshold)
    conn.execute(
        f"INSERT INTO reviews ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, ?) ON CONFLICT (id) DO NOTHING",
        (
            req.request_id,
            req.run_id,
            req.step_no,
            req.kind,
            req.action,
            req.risk,
            inline,
            blob,
            req.preview_type,
            json.dumps(req.context, default=str),
            req.on_timeout,
            req.expires_at,
            time.time(),
        ),
    )


def open_request_id(conn: Conn, run_id: str, step_no: int, kind: str) -> str:
    """The id of the step's pending request of ``kind``, else a new one: a step may fail, be retried by
    an operator and fail again, each time asking anew, while a replay finds the request it already made."""
    prefix = f"{run_id}:{kind}:{step_no}:"
    rows = conn.all(
        "SELECT id, status FROM reviews WHERE run_id = ? AND step_no = ? AND kind = ?",
        (run_id, step_no, kind),
    )
    pending = [str(r[0]) for r in rows if r[1] == "pending"]
    return pending[0] if pending else f"{prefix}{len(rows) + 1}"


def unknown_outcome_id(conn: Conn, run_id: str, step_no: int, first: str) -> str:
    """The id of the step's pending "outcome unknown" request, else ``first`` for its first one and
    ``first:N`` for the N-th: an operator's retry may be cut short by a crash again, and then must be
    asked anew, not folded into the request already resolved."""
    rows = conn.all(
        "SELECT id, status FROM reviews WHERE run_id = ? AND step_no = ? AND kind = 'outcome_unknown'",
        (run_id, step_no),
    )
    pending = [str(r[0]) for r in rows if r[1] == "pending"]
    if pending:
        return pending[0]
    return f"{first}:{len(rows) + 1}" if rows else first


def resolve_unknown_outcome(conn: Conn, run_id: str, step_no: int, *, by: str, outcome: str) -> None:
    """Mark the step's pending "outcome unknown" request resolved."""
    conn.execute(
        "UPDATE reviews SET status = 'resolved', decided_by = ?, decided_at = ?, outcome = ? "
        "WHERE run_id = ? AND step_no = ? AND kind = 'outcome_unknown' AND status = 'pending'",
        (by, time.time(), outcome, run_id, step_no),
    )


def get_request(conn: Conn, request_id: str) -> ReviewRequest:
    row = conn.one(f"SELECT {_COLUMNS} FROM reviews WHERE id = ?", (request_id,))
    if row is None:
        raise ReviewNotFound(f"no review request {request_id!r}: see `crewline review list`")
    return _from_row(conn, row)


def list_requests(
    conn: Conn, *, status: str | None = "pending", run_id: str | None = None, limit: int = 50
) -> list[ReviewRequest]:
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.all(
        f"SELECT {_COLUMNS} FROM reviews{clause} ORDER BY escalated DESC, created_at LIMIT ?",
        (*params, limit),
    )
    return [_from_row(conn, r) for r in rows]


def recent_decisions(conn: Conn, *, limit: int = 50, before: float | None = None) -> list[ReviewRequest]:
    """Decided and settled requests, newest decision first (the audit trail); ``before`` pages on."""
    where = "status NOT IN ('pending', 'closed') AND decided_at IS NOT NULL"
    params: tuple[Any, ...] = (limit,)
    if before is not None:
        where += " AND decided_at < ?"
        params = (before, limit)
    rows = conn.all(
        f"SELECT {_COLUMNS} FROM reviews WHERE {where} ORDER BY decided_at DESC, id LIMIT ?", params
    )
    return [_from_row(conn, r) for r in rows]


def set_status(conn: Conn, request_id: str, status: str, *, by: str, outcome: str | None = None) -> None:
    conn.execute(
        "UPDATE reviews SET status = ?, decided_by = ?, decided_at = ?, outcome = ? WHERE id = ?",
        (status, by, time.time(), outcome, request_id),
    )


def settle_request(
    conn: Conn, request_id: str, outcome: str, *, by: str, comment: str | None, edit: bytes | None, blobs: int
) -> None:
    """Record how an operator settled a failure or compensation request, with what they supplied."""
    inline, blob = (None, None) if edit is None else store_payload(conn, edit, blobs)
    conn.execute(
        "UPDATE reviews SET status = 'resolved', decided_by = ?, decided_at = ?, outcome = ?, comment = ?, "
        "edit = ?, edit_blob = ? WHERE id = ?",
        (by, time.time(), outcome, comment, inline, blob, request_id),
    )


def lock_request(conn: Conn, request_id: str) -> ReviewRequest:
    """The request, its row locked until commit (so two decisions on it are ordered)."""
    suffix = conn.dialect.lock_rows_suffix(FOR_UPDATE)
    conn.execute(f"SELECT id FROM reviews WHERE id = ?{suffix}", (request_id,))
    return get_request(conn, request_id)


def close_open_requests(conn: Conn, run_id: str, reason: str) -> None:
    """Close the run's pending requests (its run ended without them): nobody can decide them any more."""
    conn.execute(
        "UPDATE reviews SET status = 'closed', decided_at = ?, comment = ? WHERE run_id = ? AND status = 'pending'",
        (time.time(), reason, run_id),
    )


def pending_requests(conn: Conn) -> tuple[int, float | None]:
    """How many requests wait for a decision, and when the oldest of them was made."""
    row = conn.one("SELECT COUNT(*), MIN(created_at) FROM reviews WHERE status = 'pending'")
    count, oldest = (0, None) if row is None else row
    return int(count), None if oldest is None else float(oldest)


def count_requests(conn: Conn, run_id: str, step_no: int) -> int:
    """How many requests a step of a run has made so far (a budget pause asks again each time)."""
    return int(
        conn.scalar("SELECT COUNT(*) FROM reviews WHERE run_id = ? AND step_no = ?", (run_id, step_no))
    )


@dataclass(frozen=True)
class ReviewTimes:
    """How long people take: requests still pending and their longest wait, and the requests decided
    since a time with the seconds from creation to decision (p50, p95; closed-by-run ones excluded)."""

    pending: int
    longest_wait_s: float | None
    decided: int
    decision_p50_s: float | None
    decision_p95_s: float | None


def review_times(conn: Conn, since: float, now: float) -> ReviewTimes:
    pending, oldest = conn.one("SELECT COUNT(*), MIN(created_at) FROM reviews WHERE status = 'pending'") or (
        0,
        None,
    )
    decided = "decided_at >= ? AND status NOT IN ('pending', 'closed')"
    count = int(conn.scalar(f"SELECT COUNT(*) FROM reviews WHERE {decided}", (since,)) or 0)
    q = Percentiles("reviews", "decided_at - created_at", (0.5, 0.95), decided)
    row = conn.one(conn.dialect.percentiles_sql(q), (since,))
    p50, p95 = (None, None) if row is None else (row[1], row[2])
    return ReviewTimes(
        int(pending or 0),
        None if oldest is None else now - float(oldest),
        count,
        None if p50 is None else float(p50),
        None if p95 is None else float(p95),
    )


def escalate(conn: Conn, request_id: str) -> None:
    """An unanswered request past its deadline goes to the top of the queue as high risk, never expiring."""
    conn.execute("UPDATE reviews SET escalated = 1, risk = 'high' WHERE id = ?", (request_id,))


def decide(
    conn: Conn,
    request_id: str,
    *,
    approve: bool,
    by: str,
    comment: str | None = None,
    edit: Any = None,
    seen_hash: str | None = None,
    blob_threshold: int = 4096,
) -> ReviewRequest:
    """Record a decision on a pending approval request (the caller makes its run due, in the same
    transaction: see :func:`crewline.flows.run_store.wake_if_waiting`)."""
    conn.execute(
        f"SELECT id FROM reviews WHERE id = ?{conn.dialect.lock_rows_suffix(FOR_UPDATE)}", (request_id,)
    )
    req = get_request(conn, request_id)
    _check_decidable(req, seen_hash)
    if edit is not None:
        if not approve:
            raise InvalidInput("an edit only goes with an approval")
        edit = validate_edit(req, edit)
    inline, blob = (None, None) if edit is None else store_payload(conn, dump(edit), blob_threshold)
    now = time.time()
    conn.execute(
        "UPDATE reviews SET status = ?, decided_by = ?, decided_at = ?, comment = ?, shown_hash = ?, edit = ?, "
        "edit_blob = ? WHERE id = ?",
        (
            "approved" if approve else "rejected",
            by,
            now,
            comment,
            seen_hash or req.content_hash,
            inline,
            blob,
            request_id,
        ),
    )
    return get_request(conn, request_id)


def _check_decidable(req: ReviewRequest, seen_hash: str | None) -> None:
    """Refuse a decision on a request that is not a pending approval, or not the one the reviewer saw."""
    request_id = req.id
    if req.kind in ("failure", "compensation"):
        raise InvalidInput(
            f"request {request_id} is a {req.kind} review: settle it with `crewline review retry|skip|"
            f"{'abandon' if req.kind == 'failure' else 'done'} {request_id}`"
        )
    if req.kind not in ("approval", "budget"):
        raise InvalidInput(
            f"request {request_id} asks for the outcome of a step, not an approval: resolve it with "
            f"`crewline runs resolve {req.run_id} --step {req.step_no} --outcome done|retry|fail`"
        )
    if req.status == "closed":
        raise InvalidRunState(f"request {request_id} is closed ({req.comment}); nothing to decide")
    if req.status != "pending":
        raise InvalidRunState(
            f"request {request_id} is already {req.status} (by {req.decided_by}); nothing changed"
        )
    if req.expires_at is not None and not req.escalated and time.time() > req.expires_at:
        raise InvalidRunState(
            f"request {request_id} expired; its run applies its on_timeout policy ({req.on_timeout})"
        )
    if seen_hash is not None and seen_hash != req.content_hash:
        raise InvalidInput(
            f"request {request_id} differs from what you reviewed (hash mismatch); show it again"
        )


def validate_edit(req: ReviewRequest, edit: Any) -> Any:
    """An edit must have the shape of the preview: its Pydantic model, or the same JSON type."""
    model = _preview_model(req)
    problems = edit_problems(req, edit)
    if problems:
        where, reason = problems[0]
        if model is None:
            raise InvalidInput(f"the edit {reason}")
        raise InvalidInput(f"the edit does not fit {req.preview_type}: {where}: {reason}")
    if model is None:
        return edit
    adapter = _adapter(model)
    return adapter.dump_python(adapter.validate_python(edit), mode="json")


def edit_problems(req: ReviewRequest, edit: Any) -> list[tuple[str, str]]:
    """What is wrong with ``edit`` for this request, as (field, reason) pairs; empty when it fits.

    The field is a dotted path into the preview's model (``items.0.qty``), or ``edit`` for the whole."""
    model = _preview_model(req)
    if model is not None:
        try:
            _adapter(model).validate_python(edit)
        except pydantic.ValidationError as e:
            return [(".".join(str(p) for p in err["loc"]) or "edit", err["msg"]) for err in e.errors()]
        return []
    if req.preview is not None and type(edit) is not type(req.preview):
        return [("edit", f"must be a {_json_type(req.preview)} like the preview, got a {_json_type(edit)}")]
    return []


def preview_schema(req: ReviewRequest) -> dict[str, Any] | None:
    """The JSON schema an edit of this request must satisfy (its preview's Pydantic model), if it has one."""
    model = _preview_model(req)
    return None if model is None else copy.deepcopy(_schema(model))


def _preview_model(req: ReviewRequest) -> Any:
    return _import(req.preview_type) if req.preview_type else None


# A queue shows many requests of the same few models: build each model's validator and schema once.
@functools.lru_cache(maxsize=256)
def _adapter(model: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(model)


@functools.lru_cache(maxsize=256)
def _schema(model: Any) -> dict[str, Any]:
    return _adapter(model).json_schema()


def _json_type(value: Any) -> str:
    return {dict: "JSON object", list: "JSON array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _import(qualified: str) -> Any:
    module_name, _, qualname = qualified.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def type_name(value: Any) -> str | None:
    """``module:qualname`` of a Pydantic model instance, so a decision elsewhere can validate edits."""
    if isinstance(value, pydantic.BaseModel) and "<locals>" not in type(value).__qualname__:
        return f"{type(value).__module__}:{type(value).__qualname__}"
    return None


def oldest_pending(conn: Conn) -> tuple[str, float, int] | None:
    """(id, created_at) of the request waiting longest, and how many are pending."""
    row = conn.one(
        "SELECT id, created_at, (SELECT COUNT(*) FROM reviews WHERE status = 'pending') FROM reviews "
        "WHERE status = 'pending' ORDER BY created_at, id LIMIT 1"
    )
    return None if row is None else (str(row[0]), float(row[1]), int(row[2]))
