"""Pausing runs, switching workflows and queues, and flags over the REST API, with their key scopes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Api, hook_sections
from .test_webhooks import post_hook


def error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["message"]


def test_pause_and_resume_a_run(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    assert api.wait_status(rid, "waiting")["status"] == "waiting"
    r = api.http.post(f"/api/v1/runs/{rid}/pause")
    assert r.status_code == 200 and r.json() == {"run_id": rid, "result": "paused"}
    assert api.http.post(f"/api/v1/runs/{rid}/pause").json()["result"] == "already paused"
    assert api.http.post(f"/api/v1/runs/{rid}/events", json={"name": "go", "payload": 7}).status_code == 202
    assert api.http.get(f"/api/v1/runs/{rid}").json()["status"] == "paused"
    assert api.http.post(f"/api/v1/runs/{rid}/resume").json()["result"] == "resumed"
    assert api.wait_status(rid, "completed")["output"] == 7
    assert error(api.http.post(f"/api/v1/runs/{rid}/pause")) == (
        409,
        f"run {rid} is already completed; only an unfinished run can be paused",
    )
    assert error(api.http.post(f"/api/v1/runs/{rid}/resume"))[0] == 409


@pytest.mark.usefixtures("hook_env")
def test_a_disabled_workflow_is_refused_by_the_api_and_webhooks(api_factory: Callable[..., Api]) -> None:
    api = api_factory(hook_sections())
    r = api.http.post("/api/v1/workflows/order/disable", json={"pause_running": True})
    assert r.status_code == 200 and r.json()["action"] == "disabled" and r.json()["changed"] is True
    message = (
        "workflow 'order' is disabled and starts no runs: enable it with `crewline workflows enable order`"
    )
    started = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 1}})
    assert error(started) == (409, message)
    hooked = post_hook(api.url, json.dumps({"id": "o2", "amount": 1}).encode())
    assert hooked.status_code == 409 and message in hooked.text
    assert api.http.get("/api/v1/runs", params={"workflow": "order"}).json()["runs"] == []  # nothing started
    assert error(api.http.post("/api/v1/workflows/nosuch/enable"))[0] == 422
    assert "unknown workflow 'nosuch'" in error(api.http.post("/api/v1/workflows/nosuch/enable"))[1]
    assert api.http.post("/api/v1/workflows/order/enable").json()["changed"] is True
    started = api.http.post("/api/v1/runs", json={"workflow": "order", "input": {"id": "o3", "amount": 2}})
    assert api.wait_status(started.json()["run_id"], "completed")["output"] == {"id": "o3", "total": 4}


def test_pause_and_resume_a_workflow_and_a_queue(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(rid, "waiting")
    r = api.http.post("/api/v1/workflows/waiter/pause").json()
    assert (r["runs"], r["runs_were"]) == (1, "paused")
    assert api.http.get(f"/api/v1/runs/{rid}").json()["status"] == "paused"
    assert api.http.post("/api/v1/workflows/waiter/resume").json()["runs"] == 1
    assert api.http.post("/api/v1/queues/default/pause").json()["runs"] == 1
    assert api.http.post("/api/v1/queues/default/resume").json()["runs"] == 1
    assert error(api.http.post("/api/v1/queues/nosuch/pause"))[0] == 422
    assert api.http.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"


def test_flags(api: Api) -> None:
    r = api.http.put("/api/v1/flags/agents.enabled", json={"value": False})
    assert r.status_code == 200 and r.json()["value"] is False
    assert api.http.get("/api/v1/flags/agents.enabled").json()["value"] is False
    assert [f["name"] for f in api.http.get("/api/v1/flags").json()] == ["agents.enabled"]
    assert api.http.delete("/api/v1/flags/agents.enabled").status_code == 204
    assert error(api.http.get("/api/v1/flags/agents.enabled")) == (
        422,
        "flag 'agents.enabled' is not set: see `crewline flags list`",
    )
    assert api.http.put("/api/v1/flags/x", json={"value": 1, "extra": 2}).status_code == 422


def test_key_scopes_and_openapi(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    reviewer = api.as_key(api.key("reviewer"))
    trigger = api.as_key(api.key("trigger"))
    for client in (reviewer, trigger):
        assert client.post(f"/api/v1/runs/{rid}/pause").status_code == 403
        assert client.post("/api/v1/workflows/waiter/disable").status_code == 403
        assert client.put("/api/v1/flags/a", json={"value": 1}).status_code == 403
        assert client.get("/api/v1/flags").status_code == 403
    operator = api.as_key(api.key("operator"))
    assert operator.put("/api/v1/flags/a", json={"value": 1}).status_code == 200
    paths = api.http.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/runs/{run_id}/pause",
        "/api/v1/runs/{run_id}/resume",
        "/api/v1/workflows/{name}/disable",
        "/api/v1/workflows/{name}/enable",
        "/api/v1/workflows/{name}/pause",
        "/api/v1/queues/{name}/pause",
        "/api/v1/flags",
        "/api/v1/flags/{name}",
    ):
        assert path in paths, path
