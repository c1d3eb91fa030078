"""Stored evaluations: one row per evaluation run in ``eval_runs`` and one per case and repeat in
``eval_cases`` (output, every scorer's score, error, cost, latency), written as each case finishes so a
crash loses nothing paid for and ``--resume`` skips what is there. This module alone issues SQL on
``eval_runs`` and ``eval_cases``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import InvalidInput
from ..store import Conn, Database

__all__ = [
    "CaseResult",
    "EvalRun",
    "EvalStatus",
    "case_results",
    "create_run",
    "finish_run",
    "get_run",
    "latest_run",
    "latest_run_in",
    "list_runs",
    "new_eval_id",
    "record_case",
]

EvalStatus = Literal["running", "completed", "over_budget"]
_RUN_COLUMNS = (
    "id, name, target, dataset, dataset_version, plan, status, passed, summary, cost, started_at, finished_at"
)


@dataclass(frozen=True)
class EvalRun:
    """An evaluation: ``target`` is ``prompt:NAME@VERSION`` (or ``workflow:NAME``); ``plan`` what was asked
    (scorers, repeats, model, budget...) so it can be resumed; ``summary`` the figures once finished."""

    id: str
    name: str
    target: str
    dataset: str
    dataset_version: str
    plan: dict[str, Any]
    status: EvalStatus = "running"
    passed: bool | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    cost: float = 0.0
    started_at: float = 0.0
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaseResult:
    """One case, one repeat: ``scores`` maps each scorer to ``{value, passed, reason[, fields]}``."""

    case_id: str
    repeat: int
    split: str
    output: Any
    scores: dict[str, dict[str, Any]]
    error: str | None = None
    cost: float = 0.0
    latency_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_eval_id() -> str:
    return "ev_" + uuid.uuid4().hex[:12]


def create_run(db: Database, run: EvalRun) -> None:
    db.run(
        lambda conn: conn.execute(
            f"INSERT INTO eval_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.id,
                run.name,
                run.target,
                run.dataset,
                run.dataset_version,
                json.dumps(run.plan),
                run.status,
                None,
                None,
                0.0,
                run.started_at or time.time(),
                None,
            ),
        )
    )


async def record_case(db: Database, run_id: str, result: CaseResult) -> None:
    """Store one finished case; a case recorded twice (a resumed run racing itself) keeps the first."""
    output = json.dumps(result.output, default=str)

    def write(conn: Conn) -> None:
        inserted = conn.execute(
            "INSERT INTO eval_cases (run_id, case_id, repeat_no, split, output, scores, error, cost,"
            " latency_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, case_id, repeat_no) DO NOTHING",
            (
                run_id,
                result.case_id,
                result.repeat,
                result.split,
                output,
                json.dumps(result.scores),
                result.error,
                result.cost,
                result.latency_ms,
                time.time(),
            ),
        )
        if inserted.rowcount:
            conn.execute("UPDATE eval_runs SET cost = cost + ? WHERE id = ?", (result.cost, run_id))

    await db.write(write)


def finish_run(db: Database, run_id: str, status: EvalStatus, passed: bool, summary: dict[str, Any]) -> None:
    db.run(
        lambda conn: conn.execute(
            "UPDATE eval_runs SET status = ?, passed = ?, summary = ?, finished_at = ? WHERE id = ?",
            (status, int(passed), json.dumps(summary), time.time(), run_id),
        )
    )


def _run(row: tuple[Any, ...]) -> EvalRun:
    ident, name, target, dataset, version, plan, status, passed, summary, cost, started, finished = row
    return EvalRun(
        ident,
        name,
        target,
        dataset,
        version,
        json.loads(plan),
        status,
        None if passed is None else bool(passed),
        json.loads(summary) if summary else {},
        float(cost),
        float(started),
        None if finished is None else float(finished),
    )


def get_run(db: Database, run_id: str) -> EvalRun:
    row = db.query(lambda conn: conn.one(f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE id = ?", (run_id,)))
    if row is None:
        raise InvalidInput(f"no evaluation {run_id!r}; `crewline eval list` shows them")
    return _run(row)


def list_runs(db: Database, *, target: str | None = None, limit: int = 50) -> list[EvalRun]:
    """Evaluations, newest first; ``target`` keeps those of one target (``prompt:NAME`` prefix matches)."""
    sql = f"SELECT {_RUN_COLUMNS} FROM eval_runs"
    params: list[Any] = []
    if target is not None:
        sql += " WHERE target = ? OR target LIKE ?"
        params += [target, f"{target}@%"]
    sql += " ORDER BY started_at DESC, id LIMIT ?"
    rows = db.query(lambda conn: conn.all(sql, (*params, limit)))
    return [_run(r) for r in rows]


def latest_run(
    db: Database, target: str, dataset_version: str, *, passed: bool | None = None, split: str | None = None
) -> EvalRun | None:
    """The newest finished evaluation of ``target`` on exactly this dataset version (and split)."""
    return db.query(lambda conn: latest_run_in(conn, target, dataset_version, passed=passed, split=split))


def latest_run_in(
    conn: Conn, target: str, dataset_version: str, *, passed: bool | None = None, split: str | None = None
) -> EvalRun | None:
    """:func:`latest_run` inside the caller's transaction (the promotion gate checks in the label's)."""
    sql = f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE target = ? AND dataset_version = ? AND status = ?"
    params: list[Any] = [target, dataset_version, "completed"]
    if passed is not None:
        sql += " AND passed = ?"
        params.append(int(passed))
    for row in conn.all(sql + " ORDER BY started_at DESC", params):
        run = _run(row)
        if split is None or run.plan.get("split") == split:
            return run
    return None


def case_results(db: Database, run_id: str) -> list[CaseResult]:
    rows = db.query(
        lambda conn: conn.all(
            "SELECT case_id, repeat_no, split, output, scores, error, cost, latency_ms FROM eval_cases"
            " WHERE run_id = ? ORDER BY case_id, repeat_no",
            (run_id,),
        )
    )
    return [
        CaseResult(c, int(r), s, json.loads(o) if o else None, json.loads(sc), e, float(cost), float(lat))
        for c, r, s, o, sc, e, cost, lat in rows
    ]
