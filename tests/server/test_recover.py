"""Failed runs and compensations over HTTP: settle a failure review, undo a run, cancel with compensation."""

from __future__ import annotations

from typing import Any

from . import sample_app
from .conftest import Api


def failed_in_review(api: Api, amount: int) -> tuple[str, dict[str, Any]]:
    body = {"workflow": "fulfil", "input": {"id": f"o{amount}", "amount": amount}}
    rid = api.http.post("/api/v1/runs", json=body).json()["run_id"]
    run = api.wait_status(rid, "waiting")
    assert run["wait_reason"].startswith("failure:"), run
    [review] = api.http.get("/api/v1/reviews", params={"run_id": rid}).json()
    return rid, review


def test_settle_a_failed_run_over_http(api: Api) -> None:
    rid, review = failed_in_review(api, 500)
    assert review["kind"] == "failure" and review["preview"]["error"]["message"] == "cannot pick 500 items"
    path = f"/api/v1/reviews/{review['id']}/settle"
    reviewer = api.as_key(api.key("reviewer"))
    r = reviewer.post(path, json={"choice": "skip", "output": "by hand"})
    assert r.status_code == 403
    r = api.http.post(path, json={"choice": "skip", "output": 7})
    assert r.status_code == 422 and "the output of step 2 must be a str" in r.json()["error"]["message"]
    r = api.http.post(path, json={"choice": "later"})
    assert r.status_code == 422 and "choice" in r.json()["error"]["message"]
    r = api.http.post(path, json={"choice": "skip", "output": "picked by hand", "comment": "done in store"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved" and r.json()["outcome"] == "skip"
    assert api.wait_status(rid, "completed")["output"] == "picked by hand"
    r = api.http.post(path, json={"choice": "abandon"})
    assert r.status_code == 409 and "already resolved" in r.json()["error"]["message"]

    rid2, review2 = failed_in_review(api, 600)
    r = api.http.post(f"/api/v1/reviews/{review2['id']}/settle", json={"choice": "abandon"})
    assert r.status_code == 200, r.text
    run = api.wait_status(rid2, "failed")
    assert run["error"]["message"].endswith("; compensated steps 1)")
    assert "hold-o600" in sample_app.RELEASED
    steps = api.http.get(f"/api/v1/runs/{rid2}").json()["steps"]
    assert steps[0]["compensation"] == "release_stock" and steps[2]["kind"] == "compensation"


def test_undo_and_cancel_with_compensation_over_http(api: Api) -> None:
    body = {"workflow": "fulfil", "input": {"id": "w1", "amount": 0}}
    rid = api.http.post("/api/v1/runs", json=body).json()["run_id"]
    api.wait_status(rid, "waiting")
    r = api.http.post(f"/api/v1/runs/{rid}/undo", json={"steps": [2]})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        f"step 2 of run {rid} has no compensation; steps with one: 1 (hold, undone by release_stock)"
    )
    assert api.wait_status(rid, "waiting")["status"] == "waiting"
    r = api.http.post(f"/api/v1/runs/{rid}/cancel", json={"compensate": True})
    assert r.status_code == 200 and r.json()["result"] == "compensating"
    run = api.wait_status(rid, "cancelled")
    assert run["error"]["message"].startswith("cancelled by key ") and "hold-w1" in sample_app.RELEASED

    done = api.http.post("/api/v1/runs", json={"workflow": "fulfil", "input": {"id": "u1", "amount": 3}})
    rid2 = done.json()["run_id"]
    assert api.wait_status(rid2, "completed")["output"] == "picked 3"
    r = api.http.post(f"/api/v1/runs/{rid2}/undo")
    assert r.status_code == 200 and r.json()["result"] == "compensating"
    run = api.wait_status(rid2, "cancelled")
    assert run["error"]["type"] == "Undone" and "hold-u1" in sample_app.RELEASED
    r = api.http.post(f"/api/v1/runs/{rid2}/undo")
    assert r.status_code == 409 and "already compensated" in r.json()["error"]["message"]
    r = api.http.post(f"/api/v1/runs/{rid2}/cancel", json={"compensate": True})
    assert r.status_code == 409 and "is already cancelled; nothing to cancel" in r.json()["error"]["message"]
