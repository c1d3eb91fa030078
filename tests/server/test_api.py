"""The REST API on a real server: runs started, listed, shown, cancelled, forked and signalled."""

from __future__ import annotations

import threading

from crewline.errors import InvalidInput

from .conftest import Api


def test_health_and_readiness(api: Api) -> None:
    assert api.as_key(None).get("/healthz").json() == {"status": "ok"}
    assert api.as_key(None).get("/readyz").json() == {"status": "ready"}


def test_start_a_run_and_follow_it_to_completion(api: Api) -> None:
    r = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 21}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True
    assert body["status_url"] == f"{api.url}/api/v1/runs/{body['run_id']}"
    run = api.wait_status(body["run_id"], "completed")
    assert run["status"] == "completed" and run["output"] == {"id": "o1", "total": 42}
    assert [s["name"] for s in run["steps"]] == ["double"] and run["steps"][0]["output"] == 42
    assert api.http.get(body["status_url"]).json()["status"] == "completed"


def test_idempotency_key_returns_the_first_run_and_refuses_another_input(api: Api) -> None:
    req = {"workflow": "echo", "input": {"a": 1}}
    first = api.http.post("/api/v1/runs", json=req, headers={"Idempotency-Key": "k-1"})
    again = api.http.post("/api/v1/runs", json=req, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["run_id"] == first.json()["run_id"] and again.json()["created"] is False
    other = api.http.post(
        "/api/v1/runs", json={"workflow": "echo", "input": {"a": 2}}, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_conflict"
    assert "Idempotency-Key" in other.json()["error"]["message"]
    assert len(api.http.get("/api/v1/runs").json()["runs"]) == 1


def test_concurrent_starts_with_one_key_make_one_run(api: Api) -> None:
    ids: list[str] = []

    def start() -> None:
        with api.as_key(api.admin) as client:
            r = client.post("/api/v1/runs", json={"workflow": "nothing"}, headers={"Idempotency-Key": "same"})
            assert r.status_code in (200, 201), r.text
            ids.append(r.json()["run_id"])

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


def test_list_pages_through_every_run_once_with_filters(api: Api) -> None:
    ids = {api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"] for _ in range(7)}
    done = api.http.post("/api/v1/runs", json={"workflow": "nothing"}).json()["run_id"]
    api.wait_status(done, "completed")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3, "workflow": "waiter"}
        if cursor:
            params["cursor"] = cursor
        page = api.http.get("/api/v1/runs", params=params).json()
        seen += [r["id"] for r in page["runs"]]
        assert len(page["runs"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    created = [r["created_at"] for r in api.http.get("/api/v1/runs", params={"limit": 100}).json()["runs"]]
    assert created == sorted(created, reverse=True)
    completed = api.http.get("/api/v1/runs", params={"state": "completed"}).json()["runs"]
    assert [r["id"] for r in completed] == [done]


def test_send_an_event_cancel_and_fork(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    assert api.wait_status(rid, "waiting")["wait_event"] == "go"
    r = api.http.post(f"/api/v1/runs/{rid}/events", json={"name": "go", "payload": {"x": 1}})
    assert r.status_code == 202 and r.json()["run_id"] == rid
    assert api.wait_status(rid, "completed")["output"] == {"x": 1}

    fork = api.http.post(f"/api/v1/runs/{rid}/fork", json={"from_step": 1})
    assert fork.status_code == 201, fork.text
    fork_id = fork.json()["run_id"]
    assert api.wait_status(fork_id, "waiting")["forked_from"] == rid
    cancel = api.http.post(f"/api/v1/runs/{fork_id}/cancel")
    assert cancel.status_code == 200 and cancel.json()["result"] in ("cancelled", "cancel requested")
    assert api.wait_status(fork_id, "cancelled")["status"] == "cancelled"
    again = api.http.post(f"/api/v1/runs/{fork_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    late = api.http.post(f"/api/v1/runs/{fork_id}/events", json={"name": "go"})
    assert late.status_code == 409 and late.json()["error"]["type"] == "invalid_run_state"


def test_rerun_continues_the_same_run_and_fork_takes_a_step_name(api: Api) -> None:
    rid = api.http.post(
        "/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 21}}
    ).json()["run_id"]
    assert api.wait_status(rid, "completed")["output"] == {"id": "o1", "total": 42}
    unknown = api.http.post(f"/api/v1/runs/{rid}/rerun", json={"from": "triple"})
    assert unknown.status_code == 422, unknown.text
    message = unknown.json()["error"]["message"]
    assert (
        message
        == f"cannot rerun run {rid} from 'triple': it has no step of that name; its steps and checkpoints are double"
    )
    assert api.http.get(f"/api/v1/runs/{rid}").json()["attempt"] == 1  # nothing changed

    r = api.http.post(f"/api/v1/runs/{rid}/rerun", json={"from": "double"})
    assert r.status_code == 200, r.text
    assert {k: v for k, v in r.json().items() if k != "status_url"} == {
        "run_id": rid,
        "attempt": 2,
        "from_step": 1,
    }
    detail = api.wait_status(rid, "completed")
    assert detail["attempt"] == 2 and [s["name"] for s in detail["steps"]] == ["double"]
    [earlier] = detail["history"]
    assert (earlier["attempt"], earlier["from_step"], earlier["status"]) == (1, 1, "completed")
    assert [(s["step_no"], s["name"], s["output"]) for s in earlier["steps"]] == [(1, "double", 42)]

    fork = api.http.post(f"/api/v1/runs/{rid}/fork", json={"from_step": "double#1"})
    assert fork.status_code == 201, fork.text
    assert api.wait_status(fork.json()["run_id"], "completed")["fork_step"] == 1

    waiting = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(waiting, "waiting")
    refused = api.http.post(f"/api/v1/runs/{waiting}/rerun", json={"from": 1})
    assert (
        refused.status_code == 409 and "it is waiting; only completed" in refused.json()["error"]["message"]
    )
    assert api.http.post(f"/api/v1/runs/{rid}/rerun", json={"from_step": 1}).status_code == 422
    assert api.http.post(f"/api/v1/runs/{rid}/rerun", json={"from": 0}).status_code == 422
    paths = api.http.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/v1/runs/{run_id}/rerun"]


def test_workflows_are_listed_with_their_input_schema(api: Api) -> None:
    flows = {w["name"]: w for w in api.http.get("/api/v1/workflows").json()}
    assert sorted(flows) == [
        "broken",
        "charge",
        "echo",
        "fulfil",
        "nothing",
        "order",
        "refund",
        "slow",
        "waiter",
    ]
    assert flows["order"]["input_schema"]["required"] == ["id", "amount"]
    assert flows["nothing"]["input_schema"] is None


def test_bad_requests_get_the_right_4xx_saying_what_was_wrong(api: Api) -> None:
    post = api.http.post
    cases = [
        (
            post("/api/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "malformed_json",
            "not valid JSON",
        ),
        (post("/api/v1/runs", json={"input": {}}), 422, "invalid_request", "body workflow: Field required"),
        (post("/api/v1/runs", json={"workflow": 5}), 422, "invalid_request", "body workflow"),
        (post("/api/v1/runs", json={"workflow": "nosuch"}), 422, "unknown_workflow", "nosuch"),
        (
            post("/api/v1/runs", json={"workflow": "order", "input": {"id": "x", "amount": "lots"}}),
            422,
            "invalid_input",
            "amount",
        ),
        (
            post("/api/v1/runs", json={"workflow": "order", "input": {"id": "x", "amount": -1}}),
            422,
            "invalid_input",
            "greater than or equal to 0",
        ),
        (
            post("/api/v1/runs", json={"workflow": "nothing", "input": 3}),
            422,
            "invalid_input",
            "takes no input",
        ),
        (
            post("/api/v1/runs", json={"workflow": "echo", "priority": 2**40}),
            422,
            "invalid_request",
            "priority",
        ),
        (post("/api/v1/runs", json=["workflow"]), 422, "invalid_request", "body"),
        (
            post(
                "/api/v1/runs", content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"}
            ),
            413,
            "payload_too_large",
            "1048576 bytes",
        ),
        (api.http.get("/api/v1/runs", params={"limit": 0}), 422, "invalid_request", "query limit"),
        (api.http.get("/api/v1/runs", params={"state": "bogus"}), 422, "invalid_request", "query state"),
        (api.http.get("/api/v1/runs", params={"cursor": "!!"}), 400, "invalid_cursor", "cursor is not valid"),
        (api.http.get("/api/v1/runs/nope"), 404, "run_not_found", "no run with id 'nope'"),
        (post("/api/v1/runs/nope/cancel"), 404, "run_not_found", "nope"),
        (post("/api/v1/runs/nope/fork", json={"from_step": 0}), 422, "invalid_request", "from_step"),
        (post("/api/v1/runs/nope/events", json={"payload": 1}), 422, "invalid_request", "body name"),
        (api.http.get("/api/v1/nowhere"), 404, "not_found", "no route GET /api/v1/nowhere"),
        (api.http.put("/api/v1/runs"), 405, "method_not_allowed", "Method Not Allowed"),
    ]
    for response, status, type_, words in cases:
        error = response.json()["error"]
        assert (response.status_code, error["type"]) == (status, type_), (response.request.url, response.text)
        assert words in error["message"], error


def test_fork_from_a_step_the_run_does_not_have(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "nothing"}).json()["run_id"]
    api.wait_status(rid, "completed")
    r = api.http.post(f"/api/v1/runs/{rid}/fork", json={"from_step": 9})
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"


def test_fork_onto_an_existing_run_id_is_a_conflict_that_writes_nothing(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 1}})
    src = rid.json()["run_id"]
    api.wait_status(src, "completed")
    other = api.http.post("/api/v1/runs", json={"workflow": "waiter", "run_id": "taken"}).json()["run_id"]
    api.wait_status(other, "waiting")
    before = api.http.get(f"/api/v1/runs/{other}").json()
    for step in (1, 2):
        r = api.http.post(f"/api/v1/runs/{src}/fork", json={"from_step": step, "run_id": "taken"})
        assert r.status_code == 409, r.text
        assert r.json()["error"] == {
            "type": "run_exists",
            "message": "a run with id 'taken' already exists; leave the id out or choose a new one",
        }
    assert api.http.get(f"/api/v1/runs/{other}").json() == before


def test_payloads_nested_too_deep_are_refused_at_every_entrance(api: Api) -> None:
    deep = "[" * 230 + "]" * 230
    very_deep = "[" * 100_000 + "]" * 100_000
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(rid, "waiting")
    limit = "nested more than 64 levels deep"
    for path, body, words in [
        ("/api/v1/runs", f'{{"workflow": "echo", "input": {{"a": {deep}}}}}', f"input is {limit}"),
        (
            "/api/v1/runs",
            f'{{"workflow": "echo", "input": {very_deep}}}',
            f"request body is not valid JSON: {limit}",
        ),
        (f"/api/v1/runs/{rid}/events", f'{{"name": "go", "payload": {deep}}}', f"payload is {limit}"),
        (
            f"/api/v1/runs/{rid}/steps/1/resolve",
            f'{{"outcome": "done", "output": {deep}}}',
            f"output is {limit}",
        ),
        # Every API router reads bodies the same way, not only the runs router.
        ("/api/v1/reviews/nope/decision", f'{{"decision": {very_deep}}}', f"not valid JSON: {limit}"),
        ("/api/v1/keys", f'{{"scope": {very_deep}}}', f"not valid JSON: {limit}"),
    ]:
        r = api.http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert words in r.json()["error"]["message"]
    assert api.http.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"
    assert len(api.http.get("/api/v1/runs").json()["runs"]) == 1


def test_a_run_whose_stored_payload_cannot_be_read_is_still_shown(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 1}})
    run_id = rid.json()["run_id"]
    api.wait_status(run_id, "completed")
    deep = "[" * 230 + "]" * 230
    api.app.db.run(lambda c: c.execute("UPDATE runs SET input = ? WHERE id = ?", (deep, run_id)))
    api.app.db.run(lambda c: c.execute("UPDATE steps SET output = ? WHERE run_id = ?", (deep, run_id)))
    r = api.http.get(f"/api/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    run = r.json()
    assert "cannot be read" in run["input"]["unreadable"] and run["output"] == {"id": "o1", "total": 2}
    assert "cannot be read" in run["steps"][0]["output"]["unreadable"]
    assert [x["id"] for x in api.http.get("/api/v1/runs").json()["runs"]] == [run_id]


def test_crewline_errors_from_deeper_down_keep_their_status(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def broken(*args: object, **kwargs: object) -> None:
        raise InvalidInput("the store said no")

    monkeypatch.setattr(api.app, "cancel", broken)
    r = api.http.post("/api/v1/runs/x/cancel")
    assert r.status_code == 422 and r.json()["error"]["message"] == "the store said no"
