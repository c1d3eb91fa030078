"""Signing in to the console, sessions and their limits, CSRF, and what never appears in an answer."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crewline.server import ServerConfig, create_app
from crewline.server.auth import FREE_FAILURES

from ..server.conftest import Api, make_app
from .conftest import Browser, Clock


@pytest.mark.parametrize("scope", ["admin", "operator", "reviewer"])
def test_each_console_scope_signs_in_and_sees_only_what_it_may_open(
    api: Api, browser: Callable[[], Browser], scope: str
) -> None:
    b = browser()
    key = api.key(scope, name=f"{scope} laptop")
    r = b.sign_in(key)
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = b.get("/")
    if scope == "reviewer":  # no runs for a reviewer: it lands on the first page it may open
        assert page.status_code == 303 and page.headers["location"] == "/reviews"
        page = b.get("/reviews")
        assert '<li><a href="/"' not in page.text and "<h1>Overview</h1>" not in page.text
    else:
        assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
        assert '<a href="/" aria-current="page">Overview</a>' in page.text
    assert f"{scope} laptop · {scope}" in page.text
    assert key not in b.everything_seen()


@pytest.mark.parametrize("scope", ["trigger", "proxy"])
def test_trigger_and_proxy_keys_are_refused_with_what_to_use_instead(
    api: Api, browser: Callable[[], Browser], scope: str
) -> None:
    b = browser()
    key = api.key(scope)
    r = b.sign_in(key)
    assert r.status_code == 403
    assert f"A key of scope &#39;{scope}&#39; cannot sign in" in r.text and "operator" in r.text
    assert "crewline_session" not in r.headers.get("set-cookie", "")
    assert b.get("/").status_code == 303
    assert key not in b.everything_seen()


def test_a_wrong_key_is_told_so_and_never_echoed(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    wrong = "crl_0123456789ab_" + "x" * 43
    r = b.sign_in(wrong)
    assert r.status_code == 401 and "That API key is not valid" in r.text
    revoked = api.key("operator")
    api.http.delete(f"/api/v1/keys/{revoked.split('_')[1]}")
    r = b.sign_in(revoked)
    assert r.status_code == 401 and "revoked" in r.text
    assert wrong not in b.everything_seen() and revoked not in b.everything_seen()


def test_the_session_cookie_is_httponly_strict_and_expiring(api: Api, browser: Callable[[], Browser]) -> None:
    r = browser().sign_in(api.admin)
    cookie = _session_cookie(r)
    assert cookie.startswith("crewline_session=")
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in attributes and attributes["samesite"].strip().lower() == "samesite=strict"
    assert int(attributes["max-age"].split("=")[1]) == 7 * 86400  # the default session_max
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back


def test_the_session_cookie_is_secure_over_tls(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path)
    from ..server.conftest import new_key

    key = new_key(app, "operator")
    cert, private = _self_signed(tmp_path)
    config = uvicorn.Config(
        create_app(app, config=ServerConfig(key_cache=0.0), workers=0),
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(cert),
        ssl_keyfile=str(private),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    context = ssl.create_default_context(cafile=str(cert))
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as http:
            form = http.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]*)"', form.text)
            assert csrf is not None and "secure" in form.headers["set-cookie"].lower()
            r = http.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/"})
            assert r.status_code == 303
            assert "secure" in [p.strip().lower() for p in _session_cookie(r).split(";")]
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _session_cookie(response: httpx.Response) -> str:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith("crewline_session=")]
    assert len(found) == 1, response.headers
    return found[0]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_an_idle_session_goes_to_sign_in_and_comes_back(
    api_factory: Callable[..., Api], clock: Clock
) -> None:
    api = api_factory({"console": {"session_idle": "1h", "session_max": "1d"}})
    b = Browser(api.url)
    b.sign_in(api.admin)
    assert b.get("/?from=bookmark").status_code == 200
    clock.advance(3599)
    assert b.get("/").status_code == 200  # used within the hour: still signed in
    clock.advance(3601)
    r = b.get("/?from=bookmark")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/%3Ffrom%3Dbookmark&ended=1"
    form = b.get(r.headers["location"])
    assert "Your session ended" in form.text and 'name="next" value="/?from=bookmark"' in form.text
    back = b.sign_in(api.admin, next_="/?from=bookmark")
    assert back.status_code == 303 and back.headers["location"] == "/?from=bookmark"
    assert b.get("/?from=bookmark").status_code == 200


def test_a_session_ends_at_its_absolute_limit_even_when_used(
    api_factory: Callable[..., Api], clock: Clock
) -> None:
    api = api_factory({"console": {"session_idle": "2h", "session_max": "3h"}})
    b = Browser(api.url)
    b.sign_in(api.admin)
    for _ in range(2):
        clock.advance(4000)
        assert b.get("/").status_code == 200
    clock.advance(3000)  # 3h03m after sign-in, 50 minutes after the last page
    assert b.get("/").status_code == 303


def test_an_htmx_request_without_a_session_redirects_the_whole_page(api: Api) -> None:
    r = httpx.get(
        f"{api.url}/",
        headers={"HX-Request": "true", "HX-Current-URL": f"{api.url}/?state=failed"},
    )
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login?next=/%3Fstate%3Dfailed"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
def test_sign_in_only_returns_to_this_site(api: Api, browser: Callable[[], Browser], target: str) -> None:
    r = browser().sign_in(api.admin, next_=target)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_logout_ends_the_session(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    b.sign_in(api.admin)
    b.get("/")
    cookie = b.http.cookies["crewline_session"]
    r = b.post("/logout", data={"csrf": b.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replayed = httpx.get(f"{api.url}/", cookies={"crewline_session": cookie})
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/login")


def test_revoking_a_key_ends_its_sessions(api: Api, browser: Callable[[], Browser]) -> None:
    key = api.key("operator")
    laptop, phone = browser(), browser()
    laptop.sign_in(key)
    phone.sign_in(key)
    assert laptop.get("/").status_code == 200 and phone.get("/").status_code == 200
    assert api.http.delete(f"/api/v1/keys/{key.split('_')[1]}").status_code == 200
    for b in (laptop, phone):
        r = b.get("/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "revoked" not in laptop.get("/login").text  # the message went with the redirect, no key named


@pytest.mark.parametrize("csrf", [None, "", "not-the-token"])
def test_a_change_without_the_right_csrf_token_is_refused(
    api: Api, browser: Callable[[], Browser], csrf: str | None
) -> None:
    b = browser()
    b.sign_in(api.admin)
    b.get("/")
    data = {} if csrf is None else {"csrf": csrf}
    r = b.post("/logout", data=data)
    assert r.status_code == 403 and "security token (CSRF)" in r.text
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf or "x"}
    assert b.post("/logout", headers=headers).status_code == 403
    assert b.get("/").status_code == 200  # refused, so still signed in
    assert b.post("/logout", headers={"X-CSRF-Token": b.csrf}).status_code == 303


def test_a_sign_in_form_without_its_token_is_refused(api: Api) -> None:
    r = httpx.post(f"{api.url}/login", data={"key": api.admin, "next": "/"})
    assert r.status_code == 403 and "crewline_session" not in r.headers.get("set-cookie", "")
    assert api.admin not in r.text


def test_failed_sign_ins_share_the_apis_throttling(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    for _ in range(FREE_FAILURES):
        assert b.sign_in("crl_0123456789ab_" + "y" * 43).status_code == 401
    r = b.sign_in(api.key("operator"))
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    api_call = api.as_key("crl_0123456789ab_" + "z" * 43).get("/api/v1/runs")
    assert api_call.status_code == 429  # the same address, the same counter


def test_pages_carry_a_strict_csp_and_static_files_a_content_hash(
    api: Api, browser: Callable[[], Browser]
) -> None:
    b = browser()
    b.sign_in(api.admin)
    page = b.get("/")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "<script>" not in page.text and " style=" not in page.text  # nothing a strict CSP would block
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any("htmx-2.0.11.min.js" in u for u in urls) and any("console.css" in u for u in urls)
    for url in urls:
        r = b.get(url)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"], url
    stale = re.sub(r"/static/\w+/", "/static/0000/", urls[0])
    assert b.get(stale).headers["cache-control"] == "no-cache"
    assert b.get("/static/0000/../../web.py").status_code == 404


def test_the_event_stream_tells_a_page_when_a_run_changes(api: Api, browser: Callable[[], Browser]) -> None:
    b = browser()
    b.sign_in(api.key("operator"))
    with b.http.stream("GET", "/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        run_id = api.http.post(
            "/api/v1/runs", json={"workflow": "order", "input": {"id": "o1", "amount": 2}}
        ).json()["run_id"]
        seen = []
        for line in stream.iter_lines():
            seen.append(line)
            if line == f"event: run-{run_id}" or len(seen) > 200:
                break
    assert f"event: run-{run_id}" in seen


def test_the_event_stream_needs_a_session(api: Api) -> None:
    r = httpx.get(f"{api.url}/events")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/events"
