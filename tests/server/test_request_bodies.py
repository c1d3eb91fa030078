"""Request bodies: a misspelled field is named in the 422 instead of being dropped; `{}` is no input."""

from __future__ import annotations

import pytest

from crewline.flows.run_store import get_run

from .conftest import Api


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/runs", {"workflow": "nothing", "inptu": {"a": 1}}, "inptu"),
        ("/api/v1/runs/r1/fork", {"from_step": 1, "run_ID": "x"}, "run_ID"),
        ("/api/v1/runs/r1/events", {"name": "go", "paylod": 1}, "paylod"),
        ("/api/v1/runs/r1/steps/1/resolve", {"outcome": "done", "ouput": 1}, "ouput"),
        ("/api/v1/reviews/r1:1/decision", {"decision": "approve", "coment": "ok"}, "coment"),
        ("/api/v1/reviews/r1:1/resolve", {"outcome": "done", "ouput": 1}, "ouput"),
        ("/api/v1/keys", {"scope": "proxy", "budget": 5}, "budget"),
    ],
)
def test_an_unknown_field_is_named_in_the_422(
    api: Api, path: str, body: dict[str, object], field: str
) -> None:
    r = api.http.post(path, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert f"body {field}: Extra inputs are not permitted" in error["message"]


def test_an_empty_object_is_no_input_for_a_workflow_that_takes_none(api: Api) -> None:
    r = api.http.post("/api/v1/runs", json={"workflow": "nothing", "input": {}})
    assert r.status_code == 201, r.text
    assert api.wait_status(r.json()["run_id"], "completed")["output"] == "done"
    refused = api.http.post("/api/v1/runs", json={"workflow": "nothing", "input": {"a": 1}})
    assert refused.status_code == 422 and "takes no input" in refused.json()["error"]["message"]


def test_fork_over_http_takes_the_same_variations_as_the_cli(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 2}}).json()
    api.wait_status(rid["run_id"], "completed")
    path = f"/api/v1/runs/{rid['run_id']}/fork"
    fork = api.http.post(path, json={"from_step": 1, "set": ["model=strong", "prompt=reply@candidate"]})
    assert fork.status_code == 201, fork.text
    record = api.app.db.run(lambda conn: get_run(conn, fork.json()["run_id"]))
    assert record.overrides == {"model": "strong", "prompts": ["reply@candidate"]}
    bad = api.http.post(path, json={"from_step": 1, "set": ["temperature=2"]})
    assert (
        bad.status_code == 422
        and "only model= and prompt= can vary in a fork" in bad.json()["error"]["message"]
    )
