"""The prompts, memory, alerts and keys pages: what they show, the changes they allow (label moves,
rollbacks, keys created and revoked) and to whom, and clear messages for bad input."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App, Settings
from crewline.evals.results import EvalRun, create_run, finish_run, new_eval_id
from crewline.evals.targets import prompt_target
from crewline.flows.prompts import resolve, sync_prompts

from ..server.conftest import Api
from .conftest import Browser

V1 = "---\nmodel: cheap\n---\nHello {{ name }}.\nKind regards\n"
V2 = "---\nmodel: cheap\n---\nHello {{ name }}, thanks for writing.\nKind regards\n"
ALERTS = {
    "alerts": {"interval": "1s", "slow-reviews": {"what": "review_wait", "threshold": "1s", "window": "1h"}}
}


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.md").write_text(V1, encoding="utf-8")
    return tmp_path / "prompts"


@pytest.fixture
def api(api_factory: Callable[..., Api], prompts_dir: Path) -> Api:
    return api_factory(sections=ALERTS)


def signed_in(api: Api, browser: Callable[[], Browser], scope: str, **options: Any) -> Browser:
    b = browser()
    assert b.sign_in(api.key(scope, **options)).status_code == 303
    return b


def test_prompts_versions_diff_and_label_moves(
    api: Api, browser: Callable[[], Browser], prompts_dir: Path
) -> None:
    v1 = resolve(api.app.db, "greet").version
    (prompts_dir / "greet.md").write_text(V2, encoding="utf-8")
    sync_prompts(api.app.db, prompts_dir)
    v2 = resolve(api.app.db, "greet@latest").version
    b = signed_in(api, browser, "operator")
    listed = b.get("/prompts").text
    assert 'href="/prompts/greet"' in listed and f"production={v1[:7]}" in listed
    page = b.get("/prompts/greet", params={"version": v1}).text
    assert page.count('class="mono" href="/prompts/greet?version=') == 2 and "Hello {{ name }}.\n" in page
    assert 'id="evaluations"' in page and "No evaluation results for this prompt yet." in page
    run = EvalRun(new_eval_id(), "tone", prompt_target("greet", v1), "tone", "d" * 16, {})
    create_run(api.app.db, run)
    finish_run(api.app.db, run.id, "completed", True, {"scorers": {"exact": {"mean": 0.875}}})
    page = b.get("/prompts/greet", params={"version": v1}).text
    assert "exact 0.88 (passed)" in page and f'<td class="mono">{v1[:12]}</td>' in page
    assert "tone@dddddddd" in page
    diff = b.get("/prompts/greet", params={"a": "production", "b": "latest"}).text
    assert (
        "<del>Hello {{ name }}.</del>" in diff and "<ins>Hello {{ name }}, thanks for writing.</ins>" in diff
    )
    bad = b.get("/prompts/greet", params={"a": "nope"})
    assert bad.status_code == 200 and "has no label &#39;nope&#39;" in bad.text
    assert b.get("/prompts/nothing-here").status_code == 404

    refused = b.post("/prompts/greet/label", data={"label": "production", "version": v2})
    assert refused.status_code == 403 and resolve(api.app.db, "greet").version == v1
    moved = b.post("/prompts/greet/label", data={"label": "production", "version": v2, "csrf": b.csrf})
    assert moved.status_code == 303 and resolve(api.app.db, "greet").version == v2
    assert "Label &#39;production&#39; now points at version" in b.get(moved.headers["location"]).text
    wrong = b.post("/prompts/greet/label", data={"label": "latest", "version": v1, "csrf": b.csrf})
    assert wrong.status_code == 422 and "moved by `crewline prompts sync`" in html.unescape(wrong.text)

    reviewer = signed_in(api, browser, "reviewer")
    assert reviewer.get("/prompts").status_code == 403


@pytest.fixture
def memory_app(api: Api) -> Iterator[App]:
    """A second app on the server's database, writing memory as a workflow or the CLI would."""
    other = App(settings=Settings(database_url=api.app.settings.database_url))
    yield other
    other.close()


def test_memory_scopes_search_versions_and_rollback(
    api: Api, browser: Callable[[], Browser], memory_app: App
) -> None:
    async def seed() -> tuple[str, str]:
        store = memory_app.memory
        kept = await store.remember("Lives in Lyon", scope="customer:1")
        await store.remember("Plan is Basic", scope="customer:1")
        snap = await store.snapshot("customer:1", label="before-import")
        await store.remember("Has three cats", scope="customer:1")
        await store.remember("Other scope", scope="customer:2")
        return kept.id, snap.id

    item_id, snap_id = asyncio.run(seed())
    b = signed_in(api, browser, "operator")
    page = b.get("/memory").text
    assert re.search(r"customer:1</a></td><td class=\"num\">3</td>", page)
    found = b.get("/memory", params={"q": "Lyon", "scope": "customer:1", "k": "3"})
    assert found.status_code == 200 and "Lives in Lyon" in found.text
    assert re.search(r'class="num score">0\.\d{4}<', found.text)
    bad = b.get("/memory", params={"q": "Lyon", "k": "lots"})
    assert bad.status_code == 422 and "results must be a whole number" in bad.text
    bad_scope = b.get("/memory", params={"q": "Lyon", "scope": "no spaces allowed"})
    assert bad_scope.status_code == 422 and "is not a valid scope" in html.unescape(bad_scope.text)
    versions = b.get(f"/memory/item/{item_id}")
    assert versions.status_code == 200 and "Version 1: add" in versions.text

    scope = b.get("/memory/scope/customer:1").text
    assert "before-import" in scope and "Has three cats" in scope
    confirm = b.post("/memory/scope/customer:1/rollback", data={"snapshot": snap_id, "csrf": b.csrf})
    assert confirm.status_code == 200 and "Roll back <span" in confirm.text
    assert "Has three cats" in b.get("/memory/scope/customer:1").text  # nothing changed before confirming
    done = b.post(
        "/memory/scope/customer:1/rollback", data={"snapshot": snap_id, "confirm": "yes", "csrf": b.csrf}
    )
    assert done.status_code == 200 and "1 removed" in done.text
    items = asyncio.run(memory_app.memory.items("customer:1"))
    assert sorted(i.text for i in items) == ["Lives in Lyon", "Plan is Basic"]
    assert "operator" not in [i.author for i in items if i.text == "Has three cats"]
    unknown = b.post("/memory/scope/customer:1/rollback", data={"snapshot": "snap_nope", "csrf": b.csrf})
    assert unknown.status_code == 422 and "Choose one of the scope" in unknown.text

    reviewer = signed_in(api, browser, "reviewer")
    assert reviewer.get("/memory").status_code == 403
    refused = reviewer.post(
        "/memory/scope/customer:1/rollback",
        data={"snapshot": snap_id, "confirm": "yes", "csrf": reviewer.csrf},
    )
    assert refused.status_code == 403


def test_alerts_show_rules_what_fires_and_the_history(api: Api, browser: Callable[[], Browser]) -> None:
    b = signed_in(api, browser, "operator")
    quiet = b.get("/alerts").text
    assert "slow-reviews" in quiet and "Nothing is firing." in quiet and "No alerts yet." in quiet
    run_id = api.http.post(
        "/api/v1/runs", json={"workflow": "refund", "input": {"id": "o1", "amount": 5}}
    ).json()["run_id"]
    api.wait_status(run_id, "waiting")
    deadline = time.monotonic() + 30  # the server's workers evaluate the rule every second
    page = b.get("/alerts").text
    while '<span class="firing">' not in page and time.monotonic() < deadline:
        time.sleep(0.2)
        page = b.get("/alerts").text
    firing = page[page.index('id="firing"') : page.index('id="rules-title"')]
    assert '<span class="firing">slow-reviews</span>' in firing
    assert "review_wait" in page and ">firing<" in page
    assert signed_in(api, browser, "reviewer").get("/alerts").status_code == 403


def test_keys_are_created_shown_once_and_revoked_by_an_admin_only(
    api: Api, browser: Callable[[], Browser]
) -> None:
    b = signed_in(api, browser, "admin", name="owner")
    assert "No keys." not in b.get("/keys").text
    made = b.post("/keys", data={"name": "zapier", "scope": "trigger", "expires_in": "30d", "csrf": b.csrf})
    assert made.status_code == 201
    token = re.search(r'id="new-token">(crl_[0-9a-f]{12}_[^<]+)<', made.text)
    assert token is not None and "only time it is shown" in made.text
    key_id = token.group(1).split("_")[1]
    assert api.as_key(token.group(1)).get("/api/v1/key").json()["id"] == key_id
    listing = b.get("/keys").text
    assert token.group(1) not in listing and key_id in listing and "zapier" in listing
    stored = api.app.db.query(lambda conn: conn.all("SELECT * FROM api_keys"))
    assert token.group(1) not in repr(stored)

    bad = b.post("/keys", data={"name": "later", "scope": "operator", "expires_in": "soon", "csrf": b.csrf})
    assert bad.status_code == 422 and "expires in" in bad.text and 'value="later"' in bad.text
    unknown_scope = b.post("/keys", data={"name": "x", "scope": "root", "csrf": b.csrf})
    assert unknown_scope.status_code == 422 and "unknown scope" in unknown_scope.text

    revoked = b.post(f"/keys/{key_id}/revoke", data={"csrf": b.csrf})
    assert revoked.status_code == 303
    assert api.as_key(token.group(1)).get("/api/v1/key").status_code == 401
    assert f"Key {key_id} is revoked" in b.get(revoked.headers["location"]).text

    operator = signed_in(api, browser, "operator")
    assert 'href="/keys"' not in operator.get("/alerts").text
    assert operator.get("/keys").status_code == 403
    refused = operator.post("/keys", data={"scope": "admin", "csrf": operator.csrf})
    assert refused.status_code == 403 and "may not manage keys" in refused.text
