"""API keys: scopes on every endpoint, missing/invalid/expired/revoked keys, rate limits, no key leaks."""

from __future__ import annotations

import logging
import time

import pytest

from crewline.server.keys import PERMISSIONS, revoke_key

from .conftest import Api

# One request per permission, each valid for the route so only the scope decides.
ROUTES = [
    ("runs:read", "GET", "/api/v1/runs", None),
    ("runs:read", "GET", "/api/v1/workflows", None),
    ("runs:start", "POST", "/api/v1/runs", {"workflow": "nothing"}),
    ("runs:events", "POST", "/api/v1/runs/{rid}/events", {"name": "other"}),
    ("runs:write", "POST", "/api/v1/runs/{rid}/fork", {"from_step": 1}),
    ("keys", "GET", "/api/v1/keys", None),
]


@pytest.mark.parametrize("scope", sorted(PERMISSIONS))
def test_every_scope_gets_exactly_its_permissions(api: Api, scope: str) -> None:
    rid = api.http.post("/api/v1/runs", json={"workflow": "waiter"}).json()["run_id"]
    api.wait_status(rid, "waiting")
    client = api.as_key(api.key(scope))
    for permission, method, path, body in ROUTES:
        r = client.request(method, path.format(rid=rid), json=body)
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
