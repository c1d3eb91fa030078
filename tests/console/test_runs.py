"""The runs page: filters, search, keyset pages, bad filters said on the page, bulk cancel and retry."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..server.conftest import Api
from .conftest import Browser


def _start(api: Api, workflow: str, data: Any = None) -> str:
    body: dict[str, Any] = {"workflow": workflow}
    if data is not None:
        body["input"] = data
    r = api.http.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr id="run-([^"]+)"', html)


def test_runs_filter_by_workflow_state_and_search(api: Api, browser: Callable[[], Browser]) -> None:
    orders = [_start(api, "order", {"id": f"o-{n}", "amount": n}) for n in (1, 2)]
    special = _start(api, "echo", {"note": "Blue_Whale 100%"})
    for run_id in [*orders, special]:
        api.wait_status(run_id, "completed")
    waiting = _start(api, "waiter")
    api.wait_status(waiting, "waiting")
    b = browser()
    b.sign_in(api.key("operator"))
    assert set(_ids(b.get("/runs").text)) == {*orders, special, waiting}
    assert set(_ids(b.get("/runs", params={"workflow": "order"}).text)) == set(orders)
    assert _ids(b.get("/runs", params={"state": "waiting"}).text) == [waiting]
    assert _ids(b.get("/runs", params={"q": "blue_whale 100%"}).text) == [special]  # case, _ and % literal
    assert _ids(b.get("/runs", params={"q": "blue%whale"}).text) == []
    assert _ids(b.get("/runs", params={"q": '"total": 4', "workflow": "order"}).text) == []
    assert set(_ids(b.get("/runs", params={"since": "1h"}).text)) == {*orders, special, waiting}
    assert _ids(b.get("/runs", params={"until": "2001-01-01"}).text) == []


def test_pages_follow_a_cursor_without_repeating_or_skipping(
    api: Api, browser: Callable[[], Browser]
) -> None:
    started = {_start(api, "nothing") for _ in range(53)}
    b = browser()
    b.sign_in(api.admin)
    first = b.get("/runs")
    seen = _ids(first.text)
    assert len(seen) == 50
    following = re.search(r'<a rel="next" href="([^"]+)"', first.text)
    assert following is not None
    second = b.get(following.group(1).replace("&amp;", "&"))
    seen += _ids(second.text)
    assert sorted(seen) == sorted(started) and 'rel="next"' not in second.text
    assert "First page" in second.text


def test_bad_filters_are_said_on_the_page_never_a_500(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "nothing")
    b = browser()
    b.sign_in(api.admin)
    r = b.get(
        "/runs",
        params={"state": "sleepy", "since": "fortnight", "from": "27/11", "after": "%%%", "workflow": "nope"},
    )
    assert r.status_code == 400
    for said in (
        "Unknown state &#39;sleepy&#39;",
        "Unknown time range &#39;fortnight&#39;",
        "is not a date like",
        "page cursor is not valid",
        "no workflow &#39;nope&#39;",
    ):
        assert said in r.text
    assert _ids(r.text) == [run_id]  # what could not be read is left out, the rest still shows
    assert b.get("/runs", params={"q": "x" * 201}).status_code == 400


def test_bulk_cancel_and_retry_report_each_run(api: Api, browser: Callable[[], Browser]) -> None:
    waiting = _start(api, "waiter")
    done = _start(api, "nothing")
    broken = _start(api, "broken")
    api.wait_status(waiting, "waiting")
    api.wait_status(done, "completed")
    api.wait_status(broken, "failed")
    b = browser()
    b.sign_in(api.key("operator"))
    b.get("/runs")
    r = b.post("/runs/bulk", data={"csrf": b.csrf, "action": "cancel", "run": [waiting, done]})
    assert r.status_code == 200
    assert re.search(rf"{waiting}</span>: cancelled", r.text)
    assert re.search(rf"{done}</span>: <span class=\"error\">not done: ", r.text)
    assert api.wait_status(waiting, "cancelled")["status"] == "cancelled"
    r = b.post("/runs/bulk", data={"csrf": b.csrf, "action": "retry", "run": [broken, "no-such-run"]})
    assert re.search(rf"{broken}</span>: retrying from step \d+ \(attempt 2\)", r.text)
    assert 'no-such-run</span>: <span class="error">not done: ' in r.text
    assert api.http.get(f"/api/v1/runs/{broken}").json()["attempt"] == 2
    refused = b.post("/runs/bulk", data={"action": "cancel", "run": [done]})
    assert refused.status_code == 403 and "CSRF" in refused.text


def test_a_row_is_fetched_again_when_its_run_changes(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "waiter")
    api.wait_status(run_id, "waiting")
    b = browser()
    b.sign_in(api.admin)
    assert f'hx-trigger="sse:run-{run_id}"' in b.get("/runs").text
    api.http.post(f"/api/v1/runs/{run_id}/cancel")
    row = b.get(f"/runs/{run_id}/row")
    assert row.text.lstrip().startswith(f'<tr id="run-{run_id}"') and "state-cancelled" in row.text
    assert b.get("/runs/nope/row").status_code == 404


def test_a_reviewer_cannot_open_the_runs_pages(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "nothing")
    b = browser()
    b.sign_in(api.key("reviewer"))
    for path in ("/runs", f"/runs/{run_id}/row"):
        r = b.get(path)
        assert r.status_code == 403 and "may not read runs" in r.text
