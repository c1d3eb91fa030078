"""The review queue page: what produced each draft, approve / edit / reject through the console and the
run continuing accordingly, schema-checked edits that keep what was typed, and decisions made twice."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from crewline import App, Context, Settings
from crewline.models import Gateway, ModelsConfig
from crewline.server import ServerConfig
from crewline.testing import ScriptedModel

from ..server.conftest import Api, make_app, serving
from .conftest import Browser


class Draft(BaseModel):
    to: str
    body: str = Field(min_length=5)
    priority: int = Field(default=1, ge=1, le=3)


PROMPT = "---\nmodel: test/scripted\n---\nWrite a short reply to {{ to }}.\n"


def with_reply_workflow(app: App) -> App:
    @app.workflow()
    async def reply(ctx: Context, to: str) -> dict[str, Any]:
        await ctx.memory.search(f"what do we know about {to}", scope="customers", k=2)
        text = await ctx.llm(prompt="reply", input={"to": to}, max_tokens=20)
        decision = await ctx.approve("send reply", preview=Draft(to=to, body=text), risk="medium")
        sent = decision.edited or Draft(to=to, body=text)
        assert isinstance(sent, Draft)
        return {
            "approved": decision.approved,
            "body": sent.body,
            "by": decision.decided_by,
            "why": decision.comment,
        }

    return app


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "reply.md").write_text(PROMPT, encoding="utf-8")
    app = with_reply_workflow(make_app(db_url, tmp_path))
    prices = ModelsConfig.parse({"prices": {"test/scripted": {"input": 1000, "output": 1000}}})
    model = ScriptedModel(default="Thanks, your refund is on its way.")
    app.engine.models = Gateway.for_testing(model, app.db, config=prices, wait_for_records=True)
    config = dataclasses.replace(ServerConfig.from_settings(app.settings), key_cache=0.0)
    with serving(app, config) as url:
        yield Api(app, url)


def waiting_reviews(api: Api, *recipients: str) -> list[dict[str, Any]]:
    """Start a reply run per recipient and wait until each asks for review; their requests, in order."""
    runs = [
        api.http.post("/api/v1/runs", json={"workflow": "reply", "input": to}).json()["run_id"]
        for to in recipients
    ]
    for run_id in runs:
        assert api.wait_status(run_id, "waiting")["status"] == "waiting"
    reviews = {r["run_id"]: r for r in api.http.get("/api/v1/reviews").json()}
    return [reviews[run_id] for run_id in runs]


def review_form(page: str, review_id: str, kind: str) -> dict[str, str]:
    """The hidden fields of one review's approve, edit or reject form, as a browser would send them."""
    action = f"/reviews/{review_id.replace(':', '%3A')}/{kind}"
    start = page.index(f'action="{action}"')
    form = page[start : page.index("</form>", start)]
    return {
        m[0]: html.unescape(m[1]) for m in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form)
    }


def remember(api: Api, *facts: str) -> None:
    """Write facts to memory as another process would (the server's app runs on its own loop)."""
    writer = App(settings=Settings(database_url=api.app.settings.database_url))
    try:

        async def write() -> None:
            for fact in facts:
                await writer.memory.remember(fact, scope="customers")

        asyncio.run(write())
    finally:
        writer.close()


def test_approve_edit_and_reject_from_the_queue_and_the_runs_continue_accordingly(
    api: Api, browser: Callable[[], Browser]
) -> None:
    remember(api, "ada@example.com prefers short replies", "bob@example.com is a wholesale customer")
    first, second, third = waiting_reviews(api, "ada@example.com", "bob@example.com", "cy@example.com")
    b = browser()
    assert b.sign_in(api.key("reviewer", name="Sam")).status_code == 303
    queue = b.get("/reviews")
    assert queue.status_code == 200 and queue.text.count('class="review') == 3
    # the preview and what produced it: model, prompt name@version, the run's cost so far
    assert (
        "Thanks, your refund is on its way." in queue.text
        and 'model <span class="mono">scripted' in queue.text
    )
    assert re.search(r'href="/prompts/reply\?version=[0-9a-f]{12}">reply@[0-9a-f]{12}<', queue.text)
    assert "<dt>Cost so far</dt><dd>$" in queue.text
    assert "Memory used at step 1: 2 items for" in html.unescape(queue.text)
    assert re.search(
        r'<span class="score" title="fused score">0\.\d{3}</span>.*prefers short replies', queue.text
    )
    assert f'href="/runs/{first["run_id"]}"' not in queue.text  # a reviewer may not open runs

    r = b.post(f"/reviews/{first['id']}/approve", data=review_form(queue.text, first["id"], "approve"))
    assert r.status_code == 303 and r.headers["location"].startswith("/reviews?decided=")
    assert "Recorded:" in b.get(r.headers["location"]).text

    edit = review_form(queue.text, second["id"], "edit") | {
        "field.to": "bob@example.com",
        "field.body": "Refund issued today, Bob.",
        "field.priority": "2",
        "comment": "warmer",
    }
    assert b.post(f"/reviews/{second['id']}/edit", data=edit).status_code == 303
    reject = review_form(queue.text, third["id"], "reject") | {"comment": "wrong customer"}
    assert b.post(f"/reviews/{third['id']}/reject", data=reject).status_code == 303

    outputs = [api.wait_status(r["run_id"], "completed")["output"] for r in (first, second, third)]
    assert outputs[0] == {
        "approved": True,
        "body": "Thanks, your refund is on its way.",
        "by": f"Sam (key {b_key_id(api, 'Sam')})",
        "why": None,
    }
    assert (
        outputs[1]["approved"]
        and outputs[1]["body"] == "Refund issued today, Bob."
        and outputs[1]["why"] == "warmer"
    )
    assert outputs[2]["approved"] is False and outputs[2]["why"] == "wrong customer"

    # the audit: who, when, what, and the diff of the edit
    audit = b.get("/reviews").text
    assert audit.count("Sam (key ") >= 3 and "wrong customer" in audit
    detail = b.get(f"/reviews/{second['id']}")
    assert "<del>" in detail.text and "Refund issued today, Bob." in detail.text and "approved" in detail.text


def b_key_id(api: Api, name: str) -> str:
    keys = api.http.get("/api/v1/keys").json()
    return next(k["id"] for k in keys if k["name"] == name)


def test_an_edit_failing_the_schema_names_the_field_and_keeps_what_was_typed(
    api: Api, browser: Callable[[], Browser]
) -> None:
    [req] = waiting_reviews(api, "ada@example.com")
    b = browser()
    b.sign_in(api.key("reviewer"))
    queue = b.get("/reviews").text
    typed = review_form(queue, req["id"], "edit") | {
        "field.to": "ada@example.com",
        "field.body": "Dear Ada, a longer and kinder reply.",
        "field.priority": "urgent",
    }
    r = b.post(f"/reviews/{req['id']}/edit", data=typed)
    assert r.status_code == 422
    assert "Priority: Input should be a valid integer" in html.unescape(r.text)
    assert 'aria-invalid="true"' in r.text and 'value="urgent"' in r.text
    assert "Dear Ada, a longer and kinder reply." in r.text  # nothing the reviewer typed is lost
    too_short = typed | {"field.priority": "2", "field.body": "Hi"}
    r = b.post(f"/reviews/{req['id']}/edit", data=too_short)
    assert (
        r.status_code == 422
        and "String should have at least 5 characters" in r.text
        and 'value="Hi"' in r.text
    )
    assert api.http.get(f"/api/v1/reviews/{req['id']}").json()["status"] == "pending"


def test_a_decision_already_made_by_someone_else_says_so_and_shows_it(
    api: Api, browser: Callable[[], Browser]
) -> None:
    [req] = waiting_reviews(api, "ada@example.com")
    first, second = browser(), browser()
    first.sign_in(api.key("reviewer", name="Kim"))
    second.sign_in(api.key("operator", name="Lee"))
    seen_by_first = first.get("/reviews").text
    seen_by_second = second.get("/reviews").text
    assert (
        first.post(
            f"/reviews/{req['id']}/approve", data=review_form(seen_by_first, req["id"], "approve")
        ).status_code
        == 303
    )
    late = review_form(seen_by_second, req["id"], "reject") | {"comment": "no"}
    r = second.post(f"/reviews/{req['id']}/reject", data=late)
    assert r.status_code == 409
    assert "Someone else already decided this review: approved by Kim (key " in r.text
    assert "Your decision was not recorded" in r.text
    assert api.wait_status(req["run_id"], "completed")["output"]["approved"] is True


def test_a_reviewer_sees_only_the_queue(api: Api, browser: Callable[[], Browser]) -> None:
    [req] = waiting_reviews(api, "ada@example.com")
    b = browser()
    b.sign_in(api.key("reviewer"))
    landing = b.get("/")
    assert landing.status_code == 303 and landing.headers["location"] == "/reviews"
    page = b.get("/reviews").text
    assert re.findall(r'<li><a href="([^"]+)"', page) == ["/reviews"]
    for path in ("/runs", f"/runs/{req['run_id']}", "/costs", "/prompts", "/memory", "/alerts", "/keys"):
        refused = b.get(path)
        assert refused.status_code == 403 and "may not" in refused.text, path
    operator = browser()
    operator.sign_in(api.key("operator"))
    assert f'href="/runs/{req["run_id"]}"' in operator.get("/reviews").text


def test_a_decision_without_the_csrf_token_is_refused_and_changes_nothing(
    api: Api, browser: Callable[[], Browser]
) -> None:
    [req] = waiting_reviews(api, "ada@example.com")
    b = browser()
    b.sign_in(api.key("reviewer"))
    b.get("/reviews")
    r = b.post(f"/reviews/{req['id']}/approve", data={"seen_hash": req["content_hash"]})
    assert r.status_code == 403 and "CSRF" in r.text
    assert api.http.get(f"/api/v1/reviews/{req['id']}").json()["status"] == "pending"


def test_a_preview_without_a_model_is_edited_as_json_and_bad_json_is_kept_and_explained(
    api: Api, browser: Callable[[], Browser]
) -> None:
    run_id = api.http.post(
        "/api/v1/runs", json={"workflow": "refund", "input": {"id": "o1", "amount": 40}}
    ).json()["run_id"]
    api.wait_status(run_id, "waiting")
    [req] = [r for r in api.http.get("/api/v1/reviews").json() if r["run_id"] == run_id]
    b = browser()
    b.sign_in(api.key("reviewer"))
    queue = b.get("/reviews").text
    hidden = review_form(queue, req["id"], "edit")
    broken = b.post(f"/reviews/{req['id']}/edit", data=hidden | {"edit": '{"amount": 25,'})
    assert (
        broken.status_code == 422
        and "the edit" in broken.text
        and "{&#34;amount&#34;: 25,</textarea>" in broken.text
    )
    wrong = b.post(f"/reviews/{req['id']}/edit", data=hidden | {"edit": "[25]"})
    assert (
        wrong.status_code == 422 and "must be a JSON object like the preview, got a JSON array" in wrong.text
    )
    ok = b.post(f"/reviews/{req['id']}/edit", data=hidden | {"edit": '{"amount": 25}'})
    assert ok.status_code == 303
    assert api.wait_status(run_id, "completed")["output"]["amount"] == 25
