"""Webhooks: good, bad, stale and replayed signatures, size limits, delivery ids, signed callbacks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from crewline.errors import ConfigError
from crewline.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify

from .conftest import HOOK_SECRET, hook_sections

pytestmark = pytest.mark.usefixtures("hook_env")


def post_hook(
    url: str,
    body: bytes,
    *,
    secret: bytes = HOOK_SECRET,
    now: float | None = None,
    headers: dict[str, str] | None = None,
    hook: str = "orders",
) -> httpx.Response:
    signed = signed_headers(secret, body, now=now)
    return httpx.post(f"{url}/hooks/{hook}", content=body, headers={**signed, **(headers or {})}, timeout=30)


def test_a_signed_webhook_starts_its_workflow(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections())
    r = post_hook(api.url, json.dumps({"id": "o7", "amount": 5}).encode())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["created"] is True and body["status_url"].endswith(f"/api/v1/runs/{body['run_id']}")
    assert api.wait_status(body["run_id"], "completed")["output"] == {"id": "o7", "total": 10}


def test_bad_stale_and_replayed_signatures_are_refused(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections(tolerance="60s"))
    body = b'{"id": "o1", "amount": 1}'
    good = signed_headers(HOOK_SECRET, body)
    first = httpx.post(f"{api.url}/hooks/orders", content=body, headers=good)
    assert first.status_code == 202
    replay = httpx.post(f"{api.url}/hooks/orders", content=body, headers=good)
    assert replay.status_code == 409 and replay.json()["error"]["type"] == "replayed"
    cases = [
        (post_hook(api.url, body, secret=b"wrong"), "does not match"),
        (post_hook(api.url, body, now=time.time() - 3600), "s old, outside the 60s tolerance"),
        (post_hook(api.url, body, now=time.time() + 3600), "in the future"),
        (httpx.post(f"{api.url}/hooks/orders", content=body), f"missing {TIMESTAMP_HEADER}"),
        (
            httpx.post(f"{api.url}/hooks/orders", content=body, headers={TIMESTAMP_HEADER: "1"}),
            f"missing {SIGNATURE_HEADER}",
        ),
        (
            httpx.post(
                f"{api.url}/hooks/orders",
                content=body,
                headers={TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "sha256=00"},
            ),
            "Unix seconds",
        ),
        (httpx.post(f"{api.url}/hooks/orders", content=body + b" ", headers=good), "does not match"),
    ]
    for r, words in cases:
        assert r.status_code == 401 and r.json()["error"]["type"] == "bad_signature", r.text
        assert words in r.json()["error"]["message"]
        assert HOOK_SECRET.decode() not in r.text
    runs = api.http.get("/api/v1/runs").json()["runs"]
    assert [r["id"] for r in runs] == [first.json()["run_id"]]


def test_replays_racing_each_other_start_one_run(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections())
    body = b'{"id": "race", "amount": 1}'
    headers = signed_headers(HOOK_SECRET, body)
    codes: list[int] = []

    def send() -> None:
        codes.append(
            httpx.post(f"{api.url}/hooks/orders", content=body, headers=headers, timeout=30).status_code
        )

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 409, 409, 409, 409, 409]
    assert len(api.http.get("/api/v1/runs").json()["runs"]) == 1


def test_a_retried_delivery_returns_its_first_run(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections())
    body = b'{"id": "o2", "amount": 1}'
    first = post_hook(api.url, body, headers={"X-Crewline-Delivery": "evt_1"})
    retry = post_hook(api.url, body, now=time.time() + 1, headers={"X-Crewline-Delivery": "evt_1"})
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.json()["run_id"] == first.json()["run_id"] and retry.json()["created"] is False


def test_a_reused_delivery_id_with_another_body_is_a_conflict(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections())
    first = post_hook(api.url, b'{"id": "o4", "amount": 1}', headers={"X-Crewline-Delivery": "evt_2"})
    assert first.status_code == 202
    retry = {"X-Crewline-Delivery": "evt_2"}
    other = post_hook(api.url, b'{"id": "o4", "amount": 9}', now=time.time() + 1, headers=retry)
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["type"] == "idempotency_conflict" and "evt_2" in error["message"]
    assert first.json()["run_id"] in error["message"]
    assert len(api.http.get("/api/v1/runs").json()["runs"]) == 1


def test_bodies_no_json_reader_handles_are_refused(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections())
    for body, words in (
        (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
        (b'{"id": "o5", "amount": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"id": "o5", "amount": 1, "x": ' + b"[" * 70 + b"]" * 70 + b"}", "nested more than"),
        (b"\xff\xfe", "not valid JSON"),
    ):
        r = post_hook(api.url, body)
        assert r.status_code == 400, (words, r.text)
        assert r.json()["error"]["type"] == "malformed_json" and words in r.json()["error"]["message"]
    assert api.http.get("/api/v1/runs").json()["runs"] == []


def test_body_limits_bad_json_bad_input_and_unknown_hooks(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory(hook_sections(max_body="1KB"))
    big = json.dumps({"id": "x" * 2000, "amount": 1}).encode()
    r = post_hook(api.url, big)
    assert r.status_code == 413 and "1024 bytes" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming too
        yield b'{"id": "'
        for _ in range(10):
            yield b"x" * 200

    stream = httpx.post(f"{api.url}/hooks/orders", content=chunks(), headers=signed_headers(HOOK_SECRET, b""))
    assert stream.status_code == 413
    r = post_hook(api.url, b"{oops")
    assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_json"
    r = post_hook(api.url, b'{"id": "o3", "amount": "many"}')
    assert r.status_code == 422 and "amount" in r.json()["error"]["message"]
    r = post_hook(api.url, b"{}", hook="nosuch")
    assert r.status_code == 404 and "no webhook named 'nosuch'" in r.json()["error"]["message"]
    assert api.http.get("/api/v1/runs").json()["runs"] == []


def test_hook_configuration_errors_are_named(api_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="workflow 'nosuch'"):
        api_factory({"webhooks": {"x": {"workflow": "nosuch", "secret_env": "TEST_HOOK_SECRET"}}})
    monkeypatch.delenv("TEST_HOOK_SECRET")
    with pytest.raises(ConfigError, match="TEST_HOOK_SECRET is not set"):
        api_factory(hook_sections())


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = 500 if len(type(self).received) <= type(self).fail_first else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_completion_callback_is_signed_and_retried(api_factory) -> None:  # type: ignore[no-untyped-def]
    _Receiver.received = []
    _Receiver.fail_first = 1
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/done"
        api = api_factory(hook_sections(callback_url=url))
        r = post_hook(api.url, b'{"id": "cb", "amount": 4}')
        run_id = r.json()["run_id"]
        # The first attempt gets a 500; the retry comes 5s later.
        deadline = time.monotonic() + 60
        while len(_Receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        receiver.shutdown()
    assert len(_Receiver.received) == 2
    headers, body = _Receiver.received[-1]
    verify(HOOK_SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], tolerance=300)
    sent = json.loads(body)
    assert sent["run_id"] == run_id and sent["status"] == "completed" and sent["output"]["total"] == 8
    state = api.app.db.query(
        lambda c: c.one("SELECT callback_state, callback_attempts FROM webhook_deliveries")
    )
    assert state == ("sent", 2)
