"""The fake Slack speaks Slack's wire format: driven here by Slack's official SDK (``slack_sdk``), whose
WebClient posts to it and whose SignatureVerifier accepts the callbacks it signs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from crewline.testing.fake_slack import FakeSlack, SlackUser, sign_slack

slack_sdk = pytest.importorskip("slack_sdk")
from slack_sdk.errors import SlackApiError  # noqa: E402
from slack_sdk.signature import SignatureVerifier  # noqa: E402

TOKEN = "xoxb-fake-0123"
BUTTON = {
    "type": "actions",
    "block_id": "b1",
    "elements": [
        {"type": "button", "action_id": "go", "value": "v1", "text": {"type": "plain_text", "text": "Go"}}
    ],
}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN, channels={"#ops": "C0OPS"}) as fake:
        yield fake


def client(slack: FakeSlack, token: str = TOKEN) -> Any:
    return slack_sdk.WebClient(token=token, base_url=slack.url + "/api/")


def test_the_official_client_posts_and_updates(slack: FakeSlack) -> None:
    web = client(slack)
    posted = web.chat_postMessage(channel="#ops", text="hello", blocks=[BUTTON])
    assert posted["ok"] and posted["channel"] == "C0OPS" and posted["message"]["text"] == "hello"
    web.chat_update(channel="C0OPS", ts=posted["ts"], text="changed", blocks=[])
    [message] = slack.messages
    assert message["text"] == "changed" and message["blocks"] == [] and message["ts"] == posted["ts"]
    assert slack.calls_to("chat.postMessage")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_refusals_read_as_slack_writes_them(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as bad_token:
        client(slack, "xoxb-wrong").chat_postMessage(channel="#ops", text="x")
    assert bad_token.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as no_channel:
        client(slack).chat_postMessage(channel="#nowhere", text="x")
    assert no_channel.value.response["error"] == "channel_not_found"
    assert slack.messages == []


def test_rate_limits_answer_429_with_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit(times=1, retry_after=7)
    answer = httpx.post(
        slack.url + "/api/chat.postMessage",
        data={"channel": "#ops", "text": "x"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
    assert answer.json() == {"ok": False, "error": "ratelimited"}
    again = client(slack).chat_postMessage(channel="#ops", text="x")  # form bodies work too
    assert again["ok"] and len(slack.messages) == 1


def test_interactions_are_signed_as_slack_signs_them(slack: FakeSlack) -> None:
    posted = client(slack).chat_postMessage(channel="#ops", text="hello", blocks=[BUTTON])
    message = {**posted["message"], "channel": posted["channel"]}
    body = slack.interaction(message, "go", user=SlackUser("U123", "ana"))
    headers = sign_slack("s3cret", body)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions" and payload["user"]["id"] == "U123"
    assert payload["container"]["message_ts"] == posted["ts"]
    assert payload["actions"][0]["value"] == "v1" and payload["actions"][0]["action_id"] == "go"
