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


PAGES = ("/costs", "/prompts", "/prompts/reply", "/memory", "/alerts", "/keys")


def test_every_page_light_dark_and_at_phone_width(page: Any, server: Server) -> None:
    run = server.start("digest", "news")
    server.wait_status(run, "completed")
    sign_in(page, server, "admin")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(f"{server.url}/")
        page.wait_for_load_state("networkidle")
        assert axe_violations(page) == []
        shoot(page, f"overview-{scheme}")
        _assert_charts_drawn(page)
    page.set_viewport_size(PHONE)
    page.goto(f"{server.url}/")
    page.wait_for_load_state("networkidle")
    shoot(page, "overview-phone")
    assert page.get_by_role("button", name="Menu").is_visible()  # the nav folds away at phone width
    for path in PAGES:
        name = path.strip("/").replace("/", "-")
        for size, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
            page.set_viewport_size(size)
            answer = page.goto(f"{server.url}{path}")
            assert answer is not None and answer.status == 200, path
            page.wait_for_load_state("networkidle")
            assert axe_violations(page) == [], path
            shoot(page, name + suffix)
    page.set_viewport_size(DESKTOP)


def _assert_charts_drawn(page: Any) -> None:
    """Every chart has a canvas with pixels that are not all one colour."""
    page.wait_for_selector("[data-chart] canvas")
    blank = page.evaluate(
        """() => [...document.querySelectorAll('[data-chart]')].map(el => {
            const canvas = el.querySelector('canvas');
            if (!canvas || !canvas.width || !canvas.height) return el.dataset.chart + ': no canvas';
            const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 4; i < px.length; i += 4)
                for (let c = 0; c < 4; c++) if (px[i + c] !== px[c]) return null;
            return el.dataset.chart + ': blank';
        }).filter(Boolean)"""
    )
    assert blank == []


def _tab(page: Any) -> str:
    """Press Tab; the focused element's id, label or text."""
    page.keyboard.press("Tab")
    described: str = page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); }"
    )
    return described


def test_reviews_approved_edited_and_rejected_carry_their_runs_on(
    page: Any, server: Server, errors: Errors
) -> None:
    approve, edit, reject, taken = (server.start("answer", EMAIL) for _ in range(4))
    reviews = {run: server.pending_review(run) for run in (approve, edit, reject, taken)}
    sign_in(page, server, "reviewer")
    assert page.url.endswith("/reviews")  # a reviewer's home: the only page its scope opens
    assert axe_violations(page) == []
    shoot(page, "reviews")

    errors.allow("status of 403")
    refused = page.goto(f"{server.url}/runs")
    assert refused is not None and refused.status == 403
    assert page.get_by_text(re.compile("may not read runs")).is_visible()

    _open_review(page, server, reviews[approve])
    assert axe_violations(page) == []
    shoot(page, "review")
    page.set_viewport_size(PHONE)
    shoot(page, "review-phone")
    page.set_viewport_size(DESKTOP)
    _tab_through_review(page)
    page.get_by_role("button", name="Approve", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert server.wait_status(approve, "completed")["output"]["sent"] is True

    _open_review(page, server, reviews[edit])
    page.get_by_text("Edit, then approve").click()
    to, body = page.get_by_label(re.compile(r"^To")), page.get_by_label(re.compile(r"^Body"))
    errors.allow("status of 422")  # the form comes back refused, as a page, with the field marked
    to.fill("not an address")
    body.fill("We will refund order 1042 today.")
    page.get_by_role("button", name="Approve with this edit").click()
    page.wait_for_load_state("networkidle")
    # The failing field is named with its reason, and what the reviewer typed is still there.
    assert page.get_by_text(re.compile(r"To: .*pattern|To: .*match", re.I)).is_visible()
    assert page.get_by_label(re.compile(r"^To")).input_value() == "not an address"
    assert page.get_by_label(re.compile(r"^Body")).input_value() == "We will refund order 1042 today."
    assert server.api.get(f"/api/v1/runs/{edit}").json()["status"] == "waiting"
    page.get_by_label(re.compile(r"^To")).fill("ada@example.com")
    page.get_by_role("button", name="Approve with this edit").click()
    page.wait_for_load_state("networkidle")
    assert server.wait_status(edit, "completed")["output"] == {
        "sent": True,
        "body": "We will refund order 1042 today.",
    }

    _open_review(page, server, reviews[reject])
    page.get_by_label("Why reject?").fill("Too vague: say when the refund lands.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_load_state("networkidle")
    assert server.wait_status(reject, "completed")["output"] == {
        "sent": False,
        "comment": "Too vague: say when the refund lands.",
    }

    # Someone else decides while the page is open: the reviewer's click is told so, with that decision.
    _open_review(page, server, reviews[taken])
    decided = server.api.post(
        f"/api/v1/reviews/{reviews[taken]}/decision", json={"decision": "reject", "comment": "Duplicate"}
    )
    assert decided.status_code == 200, decided.text
    errors.allow("status of 409")
    page.get_by_role("button", name="Approve", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text(re.compile("already", re.I)).first.is_visible()
    assert page.get_by_text("Duplicate").first.is_visible()
    assert server.wait_status(taken, "completed")["output"]["sent"] is False


def _open_review(page: Any, server: Server, review_id: str) -> None:
    page.goto(f"{server.url}/reviews/{review_id.replace(':', '%3A')}")
    page.wait_for_load_state("networkidle")


def _tab_through_review(page: Any) -> None:
    """From Approve, Tab reaches the edit, then the reason to reject, then Reject: the order they read in."""
    page.get_by_role("button", name="Approve", exact=True).focus()
    seen = [_tab(page) for _ in range(3)]
    assert seen[0] == "Edit, then approve", seen
    assert seen[1:] == [seen[1], "Reject"] and seen[1].startswith("reject-comment"), seen


def test_fork_a_run_from_a_step_with_another_prompt(page: Any, server: Server) -> None:
    original = server.start("digest", "invoices")
    server.wait_status(original, "completed")
    sign_in(page, server, "operator", f"/runs/{original}")
    assert page.url.endswith(f"/runs/{original}")
    assert axe_violations(page) == []
    shoot(page, "run")
    page.get_by_label("Fork from step").fill("2")
    page.get_by_label("Model (optional)").fill("test/scripted")
    page.get_by_role("button", name="Fork", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{32}$"))
    fork = page.url.rsplit("/", 1)[1]
    assert fork != original
    forked = server.wait_status(fork, "completed")
    assert forked["forked_from"] == original and forked["fork_step"] == 2
    page.reload()
    assert page.get_by_text(re.compile("Forked from")).is_visible()

    page.goto(f"{server.url}/runs")
    page.wait_for_load_state("networkidle")
    assert page.locator(f"a[href='/runs/{fork}']").first.is_visible()
    assert axe_violations(page) == []
    shoot(page, "runs")
    page.set_viewport_size(PHONE)
    shoot(page, "runs-phone")
