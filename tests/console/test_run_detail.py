"""One run in the console: its header, a paged timeline, payloads on demand, fork, diff, cancel, resolve."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import Context
from crewline.flows.run_store import get_run
from crewline.server import ServerConfig

from ..server.conftest import Api, make_app, serving
from ..server.test_reviews import unknown_outcome
from .conftest import Browser

BIG = "y" * 9000


@pytest.fixture
def api_with_long_runs(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The sample app plus a workflow of many steps and one whose step returns a large payload."""
    app = make_app(db_url, tmp_path)

    @app.workflow()
    async def many(ctx: Context, n: int) -> int:
        for i in range(n):
            await ctx.step(lambda i=i: {"i": i}, name=f"s{i}")
        return n

    @app.workflow()
    async def big(ctx: Context) -> int:
        text: str = await ctx.step(lambda: BIG, name="fetch page")
        return len(text)

    config = dataclasses.replace(ServerConfig.from_settings(app.settings), key_cache=0.0)
    with serving(app, config) as url:
        yield Api(app, url)


def _start(api: Api, workflow: str, data: Any = None) -> str:
    body: dict[str, Any] = {"workflow": workflow} if data is None else {"workflow": workflow, "input": data}
    run_id: str = api.http.post("/api/v1/runs", json=body).json()["run_id"]
    return run_id


def _steps(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<div class="step" id="step-(\d+)">', html)]


def test_a_long_timeline_is_paged(api_with_long_runs: Api) -> None:
    api = api_with_long_runs
    run_id = _start(api, "many", 450)
    api.wait_status(run_id, "completed", timeout=120)
    b = Browser(api.url)
    b.sign_in(api.admin)
    first = b.get(f"/runs/{run_id}")
    assert first.status_code == 200 and "Steps 1 to 200 of 450" in first.text
    assert _steps(first.text) == list(range(1, 201))
    later = re.search(r'<a rel="next" href="([^"]+)">Later steps', first.text)
    assert later is not None
    second = b.get(later.group(1))
    assert _steps(second.text) == list(range(201, 401))
    last = b.get(f"/runs/{run_id}?after=400")
    assert _steps(last.text) == list(range(401, 451)) and "Later steps" not in last.text
    assert "Earlier steps" in last.text and '<rect class="span"' in last.text


def test_a_large_payload_is_fetched_only_when_opened(api_with_long_runs: Api) -> None:
    api = api_with_long_runs
    run_id = _start(api, "big")
    api.wait_status(run_id, "completed")
    b = Browser(api.url)
    b.sign_in(api.admin)
    page = b.get(f"/runs/{run_id}")
    assert BIG not in page.text and "(large: shown when opened)" in page.text
    assert f'hx-get="/runs/{run_id}/steps/1/payload?part=output"' in page.text
    payload = b.get(f"/runs/{run_id}/steps/1/payload", params={"part": "output"})
    assert payload.status_code == 200 and BIG in payload.text
    assert b.get(f"/runs/{run_id}/steps/9/payload").status_code == 404
    assert b.get(f"/runs/{run_id}/steps/1/payload", params={"part": "secrets"}).status_code == 400


def test_fork_from_a_step_with_a_model_override(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "order", {"id": "o1", "amount": 3})
    api.wait_status(run_id, "completed")
    b = browser()
    b.sign_in(api.key("operator"))
    b.get(f"/runs/{run_id}")
    bad = b.post(f"/runs/{run_id}/fork", data={"csrf": b.csrf, "from_step": "nope", "model": "strong"})
    assert bad.status_code == 400 and "Not forked" in bad.text and 'value="nope"' in bad.text
    assert 'value="strong"' in bad.text  # what the operator typed is kept
    r = b.post(f"/runs/{run_id}/fork", data={"csrf": b.csrf, "from_step": "1", "model": "strong"})
    assert r.status_code == 303
    fork_id = r.headers["location"].removeprefix("/runs/")
    forked = api.wait_status(fork_id, "completed")
    assert forked["forked_from"] == run_id
    assert api.app.db.run(lambda conn: get_run(conn, fork_id)).overrides == {"model": "strong"}
    page = b.get(f"/runs/{fork_id}")
    assert f'Forked from <a class="mono" href="/runs/{run_id}">' in page.text


def test_diff_against_another_run(api: Api, browser: Callable[[], Browser]) -> None:
    a = _start(api, "order", {"id": "o1", "amount": 3})
    c = _start(api, "order", {"id": "o2", "amount": 4})
    for run_id in (a, c):
        api.wait_status(run_id, "completed")
    b = browser()
    b.sign_in(api.admin)
    r = b.get(f"/runs/{a}/diff", params={"other": c})
    assert r.status_code == 200 and "1 of 1 steps differ." in r.text
    assert "<pre>6</pre>" in r.text and "<pre>8</pre>" in r.text
    assert "0 of 1 steps differ." in b.get(f"/runs/{a}/diff", params={"other": a}).text
    assert b.get(f"/runs/{a}/diff", params={"other": "missing"}).status_code == 404
    assert b.get(f"/runs/{a}/diff").status_code == 400  # not a fork: say what to give


def test_cancel_from_the_run_page(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "waiter")
    api.wait_status(run_id, "waiting")
    b = browser()
    b.sign_in(api.admin)
    assert "Cancel this run" in b.get(f"/runs/{run_id}").text
    assert b.post(f"/runs/{run_id}/cancel").status_code == 403  # no CSRF token
    r = b.post(f"/runs/{run_id}/cancel", data={"csrf": b.csrf})
    assert r.status_code == 200 and "Cancelled." in r.text
    assert api.wait_status(run_id, "cancelled")["status"] == "cancelled"
    again = b.post(f"/runs/{run_id}/cancel", data={"csrf": b.csrf})
    assert again.status_code in (200, 409) and "Cancel this run" not in again.text


def test_resolve_an_unknown_outcome_keeps_bad_json_and_says_why(
    api_factory: Callable[..., Api], db_url: str, tmp_path: Path
) -> None:
    api, run_id = unknown_outcome(api_factory, db_url, tmp_path)
    b = Browser(api.url)
    b.sign_in(api.key("operator"))
    page = b.get(f"/runs/{run_id}")
    assert f'action="/runs/{run_id}/steps/1/resolve"' in page.text
    typed = '{"receipt": "rcpt-1"'
    r = b.post(f"/runs/{run_id}/steps/1/resolve", data={"csrf": b.csrf, "outcome": "done", "output": typed})
    assert r.status_code == 400 and "Step 1 not resolved" in r.text and "not valid JSON" in r.text
    assert "{&#34;receipt&#34;: &#34;rcpt-1&#34;</textarea>" in r.text
    ok = b.post(
        f"/runs/{run_id}/steps/1/resolve", data={"csrf": b.csrf, "outcome": "done", "output": '"rcpt-1"'}
    )
    assert ok.status_code == 200 and "Step 1 resolved: done." in ok.text
    assert api.wait_status(run_id, "completed")["output"] == {"receipt": "rcpt-1"}


def test_a_reviewer_cannot_open_a_run(api: Api, browser: Callable[[], Browser]) -> None:
    run_id = _start(api, "nothing")
    b = browser()
    b.sign_in(api.key("reviewer"))
    r = b.get(f"/runs/{run_id}")
    assert r.status_code == 403 and "may not read runs" in r.text
    assert b.get("/runs/missing-run").status_code == 403  # the scope is refused before the run is looked up
