"""The console in Debian's chromium: sign-in, the day's work (reviews, forks), refusals, accessibility.

Few tests, each a whole story, so the suite stays under two minutes on two cores; no sleeps: every wait
is for a selector, a URL or the network to go idle. Screenshots land in ``.artifacts/console/``.
"""

from __future__ import annotations

import re
from typing import Any

from .conftest import DESKTOP, PHONE, Errors, Server, axe_violations, shoot, sign_in

EMAIL = {"sender": "ada@example.com", "subject": "Refund for order 1042?", "body": "It arrived broken."}


def test_sign_in_returns_where_the_operator_was_and_tabs_in_order(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/?from=test")
    page.wait_for_url(re.compile(r"/login\?next="))
    assert axe_violations(page) == []
    shoot(page, "login")
    # Keyboard only: the key field has the focus on arrival; from the top, Tab reaches the skip link
    # from the skip link at the top it reaches the key and then the button.
    assert page.evaluate("() => document.activeElement.id") == "key"
    page.get_by_role("link", name="Skip to content").focus()
    focused = [_tab(page) for _ in range(4)]
    assert focused[-2:] == ["key", "Sign in"], focused
    page.locator("#key").focus()
    page.keyboard.type(server.tokens["operator"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/?from=test")
    assert server.tokens["operator"] not in page.content()


def test_trigger_and_proxy_keys_are_refused_with_a_reason(page: Any, server: Server, errors: Errors) -> None:
    errors.allow("status of 403")
    for scope in ("trigger", "proxy"):
        sign_in(page, server, scope)
        assert "/login" in page.url
        assert page.get_by_role("alert").is_visible()
        assert server.tokens[scope] not in page.content()


def test_a_change_without_the_csrf_token_is_refused(page: Any, server: Server, errors: Errors) -> None:
    errors.allow("/logout")
    sign_in(page, server, "operator")
    answer = page.evaluate(
        """async () => {
            const r = await fetch('/logout', {method: 'POST', body: new URLSearchParams({})});
            return {status: r.status, text: await r.text()};
        }"""
    )
    assert answer["status"] == 403
    assert re.search(r"csrf|security token|form", answer["text"], re.I)
    page.reload()
    assert "/login" not in page.url  # still signed in: the forged sign-out did nothing


def test_overview_pages_and_phone_width(page: Any, server: Server) -> None:
    run = server.start("digest", "news")
    server.wait_status(run, "completed")
    sign_in(page, server, "admin")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(f"{server.url}/")
        page.wait_for_load_state("networkidle")
        assert axe_violations(page) == []
        shoot(page, f"overview-{scheme}")
    page.set_viewport_size(PHONE)
    page.goto(f"{server.url}/")
    shoot(page, "overview-phone")
    page.set_viewport_size(DESKTOP)


def _tab(page: Any) -> str:
    """Press Tab; the focused element's id, label or text."""
    page.keyboard.press("Tab")
    described: str = page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); }"
    )
    return described
