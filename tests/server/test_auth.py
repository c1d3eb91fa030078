"""API keys: scopes on every endpoint, missing/invalid/expired/revoked keys, rate limits, no key leaks."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crewline.server.auth import FREE_FAILURES, Authenticator
from crewline.server.errors import ApiError
from crewline.server.keys import PERMISSIONS, revoke_key

from .conftest import Api, cli_env, make_app

# One request per permission, each valid for the route so only the scope decides.
ROUTES = [
    ("runs:read", "GET", "/api/v1/runs", None),
    ("workflows:read", "GET", "/api/v1/workflows", None),
    ("spend:read", "GET", "/api/v1/calls", None),
    ("key:self", "GET", "/api/v1/key", None),
    ("runs:start", "POST", "/api/v1/runs", {"workflow": "nothing"}),
    ("runs:events", "POST", "/api/v1/runs/{rid}/events", {"name": "other"}),
    ("runs:write", "POST", "/api/v1/runs/{rid}/fork", {"from_step": 1}),
    ("runs:write", "POST", "/api/v1/runs/{done}/rerun", {"from": 1}),
    ("keys", "GET", "/api/v1/keys", None),
]


@pytest.mark.parametrize("scope", sorted(PERMISSIONS))
def test_every_scope_gets_exactly_its_permissions(api: Api, scope: str) -> None:
    client = api.as_key(api.key(scope))
    starter = client if "runs:start" in PERMISSIONS[scope] else api.http  # a trigger steers its own runs
    rid = starter.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(rid, "waiting")
    done = api.http.post("/api/v1/runs", json={"workflow": "nothing"}).json()["run_id"]
    api.wait_status(done, "completed")  # only a finished run can be rerun
    for permission, method, path, body in ROUTES:
        r = client.request(method, path.format(rid=rid, done=done), json=body)
        if permission in PERMISSIONS[scope]:
            assert r.status_code < 300, (scope, path, r.text)
        else:
            assert r.status_code == 403, (scope, path, r.text)
            error = r.json()["error"]
            assert error["type"] == "forbidden" and f"scope {scope!r}" in error["message"]


def test_missing_malformed_unknown_expired_and_revoked_keys_are_401(api: Api) -> None:
    expired = api.key("operator", expires_at=time.time() - 1)
    revoked = api.key("operator")
    api.app.db.run(lambda conn: revoke_key(conn, revoked.split("_")[1]))
    forged = api.admin[:-4] + ("AAAA" if not api.admin.endswith("AAAA") else "BBBB")
    cases = [
        (None, "unauthenticated", "no API key"),
        ("not-a-key", "invalid_key", "not valid"),
        (forged, "invalid_key", "not valid"),
        (expired, "key_expired", "is expired"),
        (revoked, "key_revoked", "is revoked"),
    ]
    for token, type_, words in cases:
        r = api.as_key(token).get("/api/v1/runs")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == type_ and words in r.json()["error"]["message"]
        assert token is None or token not in r.text
    assert api.as_key(None).get("/api/v1/runs", headers={"X-API-Key": api.admin}).status_code == 200


def test_keys_over_http_are_shown_once_and_revoked_at_once(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(key_cache=60.0)  # a long cache: revoking through this server must still bite now
    r = api.http.post(
        "/api/v1/keys", json={"scope": "trigger", "name": "ci", "rpm": 100, "expires_in": "30d"}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["key"]
    assert token.startswith(f"crl_{created['id']}_") and created["status"] == "active"
    assert created["expires_at"] > time.time() + 29 * 86400
    listed = api.http.get("/api/v1/keys").json()
    assert token not in str(listed) and {k["id"] for k in listed} >= {created["id"]}
    trigger = api.as_key(token)
    assert trigger.get("/api/v1/key").json()["scope"] == "trigger"
    assert api.http.delete(f"/api/v1/keys/{created['id']}").json()["status"] == "revoked"
    assert trigger.get("/api/v1/runs").status_code == 401
    assert api.http.delete("/api/v1/keys/000000000000").status_code == 404
    bad = api.http.post("/api/v1/keys", json={"scope": "root"})
    assert bad.status_code == 422 and "scope" in bad.json()["error"]["message"]
    bad = api.http.post("/api/v1/keys", json={"scope": "proxy", "expires_in": "soon"})
    assert bad.status_code == 422 and "expires_in" in bad.json()["error"]["message"]


def test_requests_per_minute_limit(api: Api) -> None:
    client = api.as_key(api.key("operator", rpm=3))
    codes = [client.get("/api/v1/runs").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/api/v1/runs")
    assert int(r.headers["retry-after"]) >= 1 and "3 requests per minute" in r.json()["error"]["message"]


def test_keys_never_reach_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    operator = api.key("operator")
    for token in (operator, api.admin, "crl_0123456789ab_" + "x" * 43):
        api.as_key(token).get("/api/v1/keys")
        api.as_key(token).post("/api/v1/runs", json={"workflow": "nosuch"})
    text = caplog.text
    assert operator not in text and api.admin not in text and "x" * 43 not in text
    stored = api.app.db.query(lambda conn: conn.all("SELECT * FROM api_keys"))
    assert all(operator not in str(row) and api.admin not in str(row) for row in stored)


def test_a_trigger_sees_and_steers_only_the_runs_it_started(api: Api) -> None:
    trigger = api.as_key(api.key("trigger"))
    other = api.as_key(api.key("trigger"))
    mine = trigger.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    theirs = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(mine, "waiting")
    api.wait_status(theirs, "waiting")
    assert [r["id"] for r in trigger.get("/api/v1/runs").json()["runs"]] == [mine]
    assert other.get("/api/v1/runs").json()["runs"] == []
    assert trigger.get(f"/api/v1/runs/{mine}").status_code == 200
    for r in (
        trigger.get(f"/api/v1/runs/{theirs}"),
        trigger.post(f"/api/v1/runs/{theirs}/events", json={"name": "go"}),
        other.post(f"/api/v1/runs/{mine}/events", json={"name": "go"}),
    ):
        assert r.status_code == 404 and r.json()["error"]["type"] == "run_not_found", r.text
    # Naming another caller's run cannot confirm what its input was.
    r = trigger.post("/api/v1/runs", json={"workflow": "waiter", "run_id": theirs})
    assert r.status_code == 409 and "another caller" in r.json()["error"]["message"]
    assert trigger.post(f"/api/v1/runs/{mine}/events", json={"name": "go", "payload": 1}).status_code == 202
    assert api.wait_status(mine, "completed")["output"] == 1
    assert api.wait_status(theirs, "waiting")["status"] == "waiting"
    for path in ("/api/v1/spend", "/api/v1/calls", "/api/v1/budgets", "/api/v1/reviews"):
        assert trigger.get(path).status_code == 403, path


def test_a_reviewer_sees_runs_only_through_their_reviews(api: Api) -> None:
    reviewer = api.as_key(api.key("reviewer"))
    rid = api.http.post(
        "/api/v1/runs", json={"workflow": "refund", "input": {"id": "r", "amount": 5}}
    ).json()["run_id"]
    api.wait_status(rid, "waiting")
    reviews = reviewer.get("/api/v1/reviews").json()
    assert [r["preview"] for r in reviews] == [{"amount": 5}]
    for path in (f"/api/v1/runs/{rid}", "/api/v1/runs", "/api/v1/spend", "/api/v1/calls", "/api/v1/budgets"):
        r = reviewer.get(path)
        assert r.status_code == 403 and "reviewer" in r.json()["error"]["message"], path


def test_run_errors_show_type_and_message_without_traceback_or_paths(api: Api) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "broken"}).json()["run_id"]
    run = api.wait_status(rid, "failed")
    assert run["error"] == {"type": "FileNotFoundError", "message": run["error"]["message"]}
    assert "<path>" in run["error"]["message"] and "/no/such/dir" not in run["error"]["message"]
    steps = run["steps"]
    assert [s["error"] for s in steps] == [
        {"type": "FileNotFoundError", "message": steps[0]["error"]["message"]}
    ]
    listed = api.http.get("/api/v1/runs").json()["runs"][0]
    assert listed["error"] == run["error"]
    text = api.http.get(f"/api/v1/runs/{rid}").text
    assert "Traceback" not in text and ".py" not in text and "/no/such/dir" not in text
    stored = api.app.db.query(lambda conn: conn.scalar("SELECT error FROM runs WHERE id = ?", (rid,)))
    assert "/no/such/dir" in stored and "traceback" in stored  # the operator's own record keeps them


@pytest.mark.parametrize(
    "expires_in", ["nan", "inf", "infs", "1e308s", "0s", "0", "-5m", "11000d", "0.0000001s", "1ms", "59s"]
)
def test_key_lifetimes_that_never_end_or_already_ended_are_refused(api: Api, expires_in: str) -> None:
    r = api.http.post("/api/v1/keys", json={"scope": "proxy", "expires_in": expires_in})
    assert r.status_code == 422, r.text
    assert "expires_in" in r.json()["error"]["message"] and "30d" in r.json()["error"]["message"]
    assert [k["scope"] for k in api.http.get("/api/v1/keys").json()] == ["admin"]


def test_the_cli_refuses_the_same_lifetimes(db_url: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "crewline", "keys", "create", "--scope", "proxy", "--expires", "nan"]
    done = subprocess.run(command, env=cli_env(db_url), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "--expires: 'nan'" in done.stderr and "crl_" not in done.stdout


def test_repeated_failed_authentication_backs_off_per_address(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory()
    guesses = api.as_key("crl_0123456789ab_" + "x" * 43)
    codes = [guesses.get("/api/v1/runs").status_code for _ in range(FREE_FAILURES)]
    assert codes == [401] * FREE_FAILURES
    for r in (guesses.get("/api/v1/runs"), guesses.get("/v1/models"), api.as_key("junk").get("/api/v1/runs")):
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert "failed authentication" in r.text and "x" * 43 not in r.text


async def test_malformed_tokens_are_refused_without_reading_the_database(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path)
    auth = Authenticator(app)
    app.close()  # any lookup would now fail: a malformed token must not need one
    for token in ("not-a-key", "crl_0123_short", "crl_0123456789ab_" + "!" * 43, "x" * 5000):
        with pytest.raises(ApiError) as caught:
            await auth.authenticate(token, "192.0.2.1")
        assert caught.value.status == 401 and caught.value.type == "invalid_key"
