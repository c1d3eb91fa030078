"""The review queue over HTTP: list, show, approve with an edit, reject, stale hashes, scopes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crewline.flows.step_store import write_step
from crewline.server.starting import prepare_run
from crewline.store.database import Conn

from .conftest import Api, make_app


def pending_review(api: Api, amount: int) -> tuple[str, dict[str, Any]]:
    rid = api.http.post(
        "/api/v1/runs", json={"workflow": "refund", "input": {"id": "r", "amount": amount}}
    ).json()["run_id"]
    api.wait_status(rid, "waiting")
    reviews = api.http.get("/api/v1/reviews", params={"run_id": rid}).json()
    assert len(reviews) == 1 and reviews[0]["status"] == "pending"
    return rid, reviews[0]


def test_approve_with_an_edit_and_reject(api: Api) -> None:
    reviewer = api.as_key(api.key("reviewer", name="ada"))
    rid, review = pending_review(api, 50)
    assert review["preview"] == {"amount": 50} and review["action"] == "refund order"
    shown = reviewer.get(f"/api/v1/reviews/{review['id']}").json()
    r = reviewer.post(
        f"/api/v1/reviews/{review['id']}/decision",
        json={
            "decision": "approve",
            "edit": {"amount": 40},
            "seen_hash": shown["content_hash"],
            "comment": "partial",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["decided_by"].startswith("ada (key ")
    run = api.wait_status(rid, "completed")
    assert run["output"]["approved"] is True and run["output"]["amount"] == 40
    again = reviewer.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "reject"})
    assert again.status_code == 409 and "already approved" in again.json()["error"]["message"]

    rid2, review2 = pending_review(api, 7)
    stale = reviewer.post(
        f"/api/v1/reviews/{review2['id']}/decision", json={"decision": "approve", "seen_hash": "0" * 64}
    )
    assert stale.status_code == 422 and "hash mismatch" in stale.json()["error"]["message"]
    rejected = reviewer.post(
        f"/api/v1/reviews/{review2['id']}/decision", json={"decision": "reject", "comment": "no"}
    )
    assert rejected.json()["status"] == "rejected"
    assert api.wait_status(rid2, "completed")["output"]["approved"] is False
    done = api.http.get("/api/v1/reviews", params={"status": "all"}).json()
    assert sorted(r["status"] for r in done) == ["approved", "rejected"]


def test_review_errors_and_scopes(api: Api) -> None:
    _, review = pending_review(api, 3)
    trigger = api.as_key(api.key("trigger"))
    r = trigger.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "approve"})
    assert r.status_code == 403 and "reviewer" in r.json()["error"]["message"]
    assert trigger.get("/api/v1/reviews").status_code == 403
    r = api.http.get("/api/v1/reviews/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "review_not_found"
    r = api.http.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "maybe"})
    assert r.status_code == 422 and "decision" in r.json()["error"]["message"]
    r = api.http.post(
        f"/api/v1/reviews/{review['id']}/decision", json={"decision": "reject", "edit": {"amount": 1}}
    )
    assert r.status_code == 422 and "edit only goes with an approval" in r.json()["error"]["message"]
    r = api.http.post(f"/api/v1/reviews/{review['id']}/resolve", json={"outcome": "done"})
    assert r.status_code == 422 and "approval" in r.json()["error"]["message"]


def unknown_outcome(api_factory: Callable[..., Api], db_url: str, tmp_path: Path) -> tuple[Api, str]:
    """A server whose run of ``charge`` waits on step 1: its intent was committed, its result never was."""
    seed = make_app(db_url, tmp_path)
    prepared = prepare_run(seed, "charge", {"id": "c1", "amount": 5})

    def crashed_after_intent(conn: Conn) -> str:
        rid, _ = prepared.insert(conn)
        write_step(
            conn,
            rid,
            1,
            name="charge card",
            kind="step",
            effect="irreversible",
            status="intent",
            output_json=None,
            error=None,
            attempts=1,
            started_at=time.time(),
            blob_threshold=4096,
        )
        return rid

    rid = seed.db.run(crashed_after_intent)
    seed.close()
    api = api_factory()
    run = api.wait_status(rid, "waiting")
    assert run["wait_reason"].startswith("outcome unknown"), run
    return api, rid


@pytest.mark.parametrize("outcome", ["retry", "done", "fail"])
def test_settling_an_unknown_outcome_needs_the_same_scope_on_every_route(
    api_factory: Callable[..., Api], db_url: str, tmp_path: Path, outcome: str
) -> None:
    api, rid = unknown_outcome(api_factory, db_url, tmp_path)
    reviewer = api.as_key(api.key("reviewer"))
    body = {"outcome": outcome, "output": "rcpt-forged"}
    for path in (f"/api/v1/reviews/{rid}:1/resolve", f"/api/v1/runs/{rid}/steps/1/resolve"):
        r = reviewer.post(path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert "operator" in r.json()["error"]["message"]
    assert api.http.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"
    assert api.http.get(f"/api/v1/reviews/{rid}:1").json()["status"] == "pending"
    operator = api.as_key(api.key("operator"))
    r = operator.post(f"/api/v1/reviews/{rid}:1/resolve", json=body)
    assert r.status_code == 200 and r.json()["outcome"] == outcome, r.text


def test_a_cancelled_runs_request_is_closed_and_a_decision_is_a_409(api: Api) -> None:
    rid, review = pending_review(api, 9)
    assert api.http.post(f"/api/v1/runs/{rid}/cancel").json()["result"] == "cancelled"
    closed = api.http.get(f"/api/v1/reviews/{review['id']}").json()
    assert (closed["status"], closed["comment"]) == ("closed", "run cancelled")
    assert [r["id"] for r in api.http.get("/api/v1/reviews", params={"status": "closed"}).json()] == [
        review["id"]
    ]
    r = api.http.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "approve"})
    assert r.status_code == 409 and f"run {rid} was cancelled" in r.json()["error"]["message"]
    assert api.wait_status(rid, "cancelled")["status"] == "cancelled"
