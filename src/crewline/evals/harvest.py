"""Datasets from real use: ``crewline eval harvest --workflow W --since 7d``.

Each finished live run of the workflow whose output a reviewer approved becomes a case: the run's input,
and as the expected value what the reviewer approved, or their edit when they changed it (the best label
there is: a person looked at it). Runs nobody approved, and shadow runs, are left out. The held-out split
is decided by a hash of the input (:func:`.datasets.held_out`), so a case harvested again lands on the same
side and what is tuned on stays apart from what is measured. Cases are appended to the dataset file; one
whose input is already there is kept as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..flows.review_requests import list_requests
from ..flows.run_store import list_runs
from .datasets import case_id, held_out, read_dataset

if TYPE_CHECKING:
    from ..store import Conn

__all__ = ["Harvest", "harvest_cases", "write_cases"]


@dataclass(frozen=True)
class Harvest:
    cases: list[dict[str, Any]]
    runs: int  # finished live runs looked at
    unreviewed: int  # of them, with no approved review to take the expected value from


def harvest_cases(conn: Conn, workflow: str, since: float, limit: int = 5000) -> Harvest:
    runs = [
        r
        for r in list_runs(conn, state="completed", workflow=workflow, limit=limit)
        if r.created_at >= since and not r.shadow
    ]
    cases: dict[str, dict[str, Any]] = {}
    unreviewed = 0
    for run in sorted(runs, key=lambda r: r.created_at):
        approved = [
            r
            for r in list_requests(conn, status="approved", run_id=run.id, limit=100)
            if r.kind == "approval"
        ]
        if not approved:
            unreviewed += 1
            continue
        last = max(approved, key=lambda r: r.decided_at or 0.0)
        edited = last.edit is not None
        cid = case_id(run.input)
        cases[cid] = {  # the latest run with this input wins
            "id": cid,
            "input": run.input,
            "expected": last.edit if edited else last.preview,
            "tags": ["harvested", "edited" if edited else "approved", f"run:{run.id}"],
            "split": held_out(cid),
        }
    return Harvest(list(cases.values()), len(runs), unreviewed)


def write_cases(path: Path, cases: list[dict[str, Any]]) -> tuple[int, int]:
    """Append the cases not in ``path`` yet; returns (added, already there)."""
    if path.suffix != ".jsonl":
        raise InvalidInput(f"harvest writes JSON lines: name a .jsonl file, not {path.name}")
    known = {c.id for c in read_dataset(path).cases} if path.is_file() and path.stat().st_size else set()
    new = [c for c in cases if c["id"] not in known]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for case in new:
            f.write(json.dumps(case, sort_keys=True, default=str) + "\n")
    return len(new), len(cases) - len(new)
