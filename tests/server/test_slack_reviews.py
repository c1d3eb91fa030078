"""Review requests in Slack, against the fake Slack: posted once with buttons, decided by a signed click
(good, bad, stale and replayed signatures), the run continuing, and rate-limited posts retried."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from crewline.testing.fake_slack import FakeSlack, SlackUser, deliver, sign_slack

from .conftest import Api

TOKEN = "xoxb-test-token-4c1d"
SIGNING = "signing-secret-8e2f"
ANA = SlackUser("U0ANA", "ana")


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_SLACK_SIGNING", SIGNING)
    with FakeSlack(token=TOKEN, channels={"#ops": "C0OPS"}) as fake:
        yield fake


def sections(slack: FakeSlack, **connector: Any) -> dict[str, Any]:
    return {
        "connectors": {
            "slack": {
                "type": "slack",
                "bot_token": "env:TEST_SLACK_TOKEN",
                "signing_secret": "env:TEST_SLACK_SIGNING",
                "reviews_channel": "#ops",
                "base_url": slack.url + "/api",
                **connector,
            }
        },
        "review": {"slack": "slack"},
    }


def until(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
    return found


def refund(api: Api, amount: int = 30) -> tuple[str, dict[str, Any]]:
    run = api.http.post("/api/v1/runs", json={"workflow": "refund", "input": {"id": "o", "amount": amount}})
    run_id = run.json()["run_id"]
    api.wait_status(run_id, "waiting")
    [review] = api.http.get("/api/v1/reviews", params={"run_id": run_id}).json()
    return run_id, review


def posted(slack: FakeSlack, review_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((m for m in slack.messages if review_id in m["text"]), None)

    message: dict[str, Any] = until(find)
    return message


def hook(api: Api) -> str:
    return api.url + "/hooks/slack/interactions"


def test_a_review_is_posted_once_and_approved_from_slack(
    api_factory: Callable[..., Api], slack: FakeSlack
) -> None:
    api = api_factory(sections(slack))
    run_id, review = refund(api, 30)
    message = posted(slack, review["id"])
    actions = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == ["crewline_approve", "crewline_reject"]
    assert '"amount": 30' in str(message["blocks"])
    answer = slack.click(hook(api), SIGNING, message, "crewline_approve", user=ANA)
    assert answer.status_code == 200, answer.text
    run = api.wait_status(run_id, "completed")
    assert run["output"] == {"approved": True, "amount": 30, "by": "ana (Slack U0ANA)"}
    decided = api.http.get(f"/api/v1/reviews/{review['id']}").json()
    assert decided["decided_by"] == "ana (Slack U0ANA)" and decided["status"] == "approved"
    [shown] = [m for m in slack.messages if m["ts"] == message["ts"]]
    assert not [b for b in shown["blocks"] if b["type"] == "actions"]
    assert "Approved* by ana (Slack U0ANA)" in str(shown["blocks"])
    time.sleep(0.3)  # several poster ticks: none posts the request again
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_bad_stale_and_replayed_signatures_decide_nothing(
    api_factory: Callable[..., Api], slack: FakeSlack
) -> None:
    api = api_factory(sections(slack))
    run_id, review = refund(api)
    message = posted(slack, review["id"])
    body = slack.interaction(message, "crewline_reject", user=ANA)
    wrong = deliver(hook(api), body, sign_slack("not-the-secret", body))
    stale = deliver(hook(api), body, sign_slack(SIGNING, body, timestamp=int(time.time()) - 301))
    unsigned = httpx.post(hook(api), content=body)
    for answer in (wrong, stale, unsigned):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["type"] == "bad_signature"
    assert "old" in stale.json()["error"]["message"]
    assert api.http.get(f"/api/v1/reviews/{review['id']}").json()["status"] == "pending"

    headers = sign_slack(SIGNING, body)
    assert deliver(hook(api), body, headers).status_code == 200
    replay = deliver(hook(api), body, headers)
    assert replay.status_code == 409 and replay.json()["error"]["type"] == "replayed"
    assert api.wait_status(run_id, "completed")["output"]["approved"] is False


def test_unknown_and_already_decided_reviews(api_factory: Callable[..., Api], slack: FakeSlack) -> None:
    api = api_factory(sections(slack))
    run_id, review = refund(api)
    message = posted(slack, review["id"])
    forged = json.loads(json.dumps(message).replace(review["id"], "no-such-review"))
    assert forged["blocks"] != message["blocks"]
    unknown = slack.click(hook(api), SIGNING, forged, "crewline_approve")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_review"

    reviewer = api.as_key(api.key("reviewer", name="bo"))
    decided = reviewer.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "approve"})
    assert decided.status_code == 200
    late = slack.click(hook(api), SIGNING, message, "crewline_reject", user=ANA)
    assert late.status_code == 200
    after = api.http.get(f"/api/v1/reviews/{review['id']}").json()
    assert after["status"] == "approved" and after["decided_by"].startswith("bo (key ")
    [note] = slack.responses
    assert note["response_type"] == "ephemeral" and note["ts"] == message["ts"]
    assert "already approved by bo (key" in note["text"]

    def closed() -> bool:
        [shown] = [m for m in slack.messages if m["ts"] == message["ts"]]
        return "Approved* by bo (key" in str(shown["blocks"])

    until(closed)
    assert api.wait_status(run_id, "completed")["output"]["approved"] is True


def test_only_listed_reviewers_may_decide(api_factory: Callable[..., Api], slack: FakeSlack) -> None:
    api = api_factory(sections(slack, reviewers=["U0ANA"]))
    run_id, review = refund(api)
    message = posted(slack, review["id"])
    stranger = slack.click(hook(api), SIGNING, message, "crewline_approve", user=SlackUser("U0EVE", "eve"))
    assert stranger.status_code == 403 and "U0EVE" in stranger.json()["error"]["message"]
    assert api.http.get(f"/api/v1/reviews/{review['id']}").json()["status"] == "pending"
    assert slack.click(hook(api), SIGNING, message, "crewline_approve", user=ANA).status_code == 200
    assert api.wait_status(run_id, "completed")["output"]["by"] == "ana (Slack U0ANA)"


def test_a_rate_limited_post_is_retried_until_it_lands_once(
    api_factory: Callable[..., Api], slack: FakeSlack
) -> None:
    slack.rate_limit(times=3, retry_after=0, method="chat.postMessage")
    api = api_factory(sections(slack, max_retries=0))
    _, review = refund(api)
    posted(slack, review["id"])
    answers = [c.answered for c in slack.calls_to("chat.postMessage")]
    assert answers == [429, 429, 429, 200]
    assert len(slack.messages) == 1


def test_decided_elsewhere_the_message_loses_its_buttons(
    api_factory: Callable[..., Api], slack: FakeSlack
) -> None:
    api = api_factory(sections(slack))
    run_id, review = refund(api)
    message = posted(slack, review["id"])
    reviewer = api.as_key(api.key("reviewer", name="bo"))
    reviewer.post(f"/api/v1/reviews/{review['id']}/decision", json={"decision": "reject", "comment": "no"})

    def closed() -> bool:
        [shown] = [m for m in slack.messages if m["ts"] == message["ts"]]
        return "Rejected* by bo (key" in str(shown["blocks"])

    until(closed)
    assert api.wait_status(run_id, "completed")["output"]["approved"] is False


async def test_a_post_claimed_again_after_a_crash_is_found_not_reposted(
    db_url: str, slack: FakeSlack
) -> None:
    """A worker died after Slack took the post but before the ts was recorded: the next claim asks the
    channel for the review's key and records the message it finds."""
    from crewline import App, Settings
    from crewline.workers import slack_outbox as outbox
    from crewline.workers.slack_reviews import SlackReviews, request_message

    from .sample_app import build

    only_connector = {"connectors": sections(slack)["connectors"]}  # no poster chore in the worker
    app = build(App(settings=Settings(database_url=db_url, sections=only_connector)))
    try:
        run_id = await app.start("refund", {"id": "o", "amount": 5})
        worker = app.worker(concurrency=1)
        task = asyncio.create_task(worker.run())
        [review] = await until_async(lambda: app.reviews.list(run_id=run_id))
        worker.stop()
        await task
        slack.calls.clear()
        reviews = SlackReviews(app.db, app.engine.connectors.get("slack"), lease=0.0)  # type: ignore[arg-type]
        await app.db.write(lambda conn: outbox.queue_posts(conn, [review.id], "slack"))
        # A worker claims the row, its post reaches Slack, and it dies; its lease (0s here) lapses.
        claimed = await app.db.write(lambda conn: outbox.claim_due(conn, lease=0.0))
        assert [p.review_id for p in claimed] == [review.id]
        text, blocks = request_message(review)
        await reviews.slack.post_message(text, channel="#ops", blocks=blocks, key=review.id)
        assert await reviews.tick() == 1
        assert [c.method for c in slack.calls] == ["chat.postMessage", "conversations.history"]
        assert len([m for m in slack.messages if review.id in m["text"]]) == 1
        post = await app.db.read(lambda conn: outbox.find_post(conn, review.id))
        assert post is not None and post.state == "posted" and post.ts == slack.messages[0]["ts"]
    finally:
        await app.aclose()


async def until_async(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await what()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
    return found


def test_config_check_names_what_review_slack_needs() -> None:
    from crewline.workers.slack_reviews import slack_problems

    assert slack_problems({"slack": "chat"}, {}) == [
        '[review] slack = "chat" needs a [connectors.chat] with type = "slack"'
    ]
    bare = slack_problems({"slack": "chat"}, {"chat": {"type": "slack", "bot_token": "env:T"}})
    assert any("reviews_channel" in p for p in bare) and any("signing_secret" in p for p in bare)
    assert slack_problems({"slack": 3}, {}) and slack_problems({}, {}) == []
