"""The proxy through the official openai and anthropic SDKs: plain, streaming, tools, embeddings, models,
upstream 429 and 500, a budget refusal, bad keys and bad input — each in the protocol's own shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from crewline.testing import FakeProvider
from crewline.testing.fake_server import Fault

from .conftest import Api


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeProvider(api_key="sk-test") as server:
        yield server


@pytest.fixture
def proxy(api_factory: Callable[..., Api], fake: FakeProvider) -> Api:
    models = {
        "providers": {
            "up": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"},
            "ant": {"format": "anthropic", "base_url": fake.url, "api_key_env": "FAKE_KEY"},
        },
        "aliases": {"fast": "up/gpt-test", "claude": "ant/claude-test", "emb": "up/embed-test"},
        "prices": {
            "up/gpt-test": {"input": 1.0, "output": 1000.0},
            "ant/claude-test": {"input": 1.0, "output": 1.0},
            "up/embed-test": {"input": 0.1, "output": 0.0},
        },
        "retry": {"base_delay": "10ms", "attempts": 1},
        "max_tokens": 10,
    }
    return api_factory({"models": models}, workers=0)


def oai(api: Api, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key or api.key("proxy"), base_url=f"{api.url}/v1", max_retries=0)


def ant(api: Api, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key or api.key("proxy"), base_url=api.url, max_retries=0)


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_openai_plain_streaming_and_tools(proxy: Api, fake: FakeProvider) -> None:
    client = oai(proxy)
    fake.reply("hello there", input_tokens=5, output_tokens=2)
    reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello there" and reply.model == "fast"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 2)  # type: ignore[union-attr]

    fake.reply("streamed words here")
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words here"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None

    fake.reply(tool_calls=[("weather", {"city": "Paris"})])
    reply = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER]
    )  # type: ignore[list-item]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    fake.reply("sunny")
    follow = client.chat.completions.create(
        model="fast",
        tools=[WEATHER],
        messages=[  # type: ignore[list-item]
            {"role": "user", "content": "weather?"},
            reply.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
    )
    assert follow.choices[0].message.content == "sunny"

    fake.reply(tool_calls=[("weather", {"city": "Oslo"})])
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "w"}],
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    deltas = [tc for c in stream for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "weather" and deltas[0].function.arguments == '{"city": "Oslo"}'  # type: ignore[union-attr]


def test_openai_embeddings_and_models(proxy: Api) -> None:
    client = oai(proxy)
    out = client.embeddings.create(model="emb", input=["alpha", "beta"])  # base64 on the wire, floats here
    assert len(out.data) == 2 and len(out.data[0].embedding) > 1
    plain = client.embeddings.create(model="emb", input="alpha", encoding_format="float")
    assert plain.data[0].embedding == pytest.approx(out.data[0].embedding, rel=1e-6)
    assert {m.id for m in client.models.list()} >= {"fast", "claude", "emb"}
    key = proxy.key("proxy")
    for header in ("api-key", "x-api-key", "authorization"):  # every header the other routes take
        token = f"Bearer {key}" if header == "authorization" else key
        listed = httpx.get(proxy.url + "/v1/models", headers={header: token})
        assert listed.status_code == 200 and "fast" in listed.text, (header, listed.text)


def test_an_unsupported_embedding_is_a_400_and_leaves_the_model_up(proxy: Api, fake: FakeProvider) -> None:
    client = oai(proxy)
    llama = "Llama model must be created with embedding=True to call this method"
    fake.fault(Fault.http(500, llama, path="/embeddings", times=10))
    for _ in range(6):  # more than the breaker's min_calls
        with pytest.raises(openai.BadRequestError, match="embedding=True"):
            client.embeddings.create(model="fast", input="hello")
    fake.reply("still here")
    reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "still here"


def test_models_say_which_can_embed(proxy: Api) -> None:
    listed = oai(proxy).models.list().model_dump()["data"]
    caps = {m["id"]: m["capabilities"] for m in listed}
    assert caps["emb"] == ["chat", "embeddings"] and caps["claude"] == ["chat"]


def test_anthropic_plain_streaming_and_tools(proxy: Api, fake: FakeProvider) -> None:
    client = ant(proxy)
    fake.reply("bonjour", input_tokens=4, output_tokens=1)
    msg = client.messages.create(
        model="claude", max_tokens=10, system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == "bonjour" and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 1)

    fake.reply("a streamed reply")
    with client.messages.stream(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "a streamed reply" and final.stop_reason == "end_turn"

    tool = {"name": "weather", "description": "Weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    fake.reply(tool_calls=[("weather", {"city": "Rome"})])
    msg = client.messages.create(
        model="claude",
        max_tokens=10,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    )
    use = msg.content[-1]
    assert msg.stop_reason == "tool_use" and use.type == "tool_use" and use.input == {"city": "Rome"}
    fake.reply("warm")
    msg = client.messages.create(
        model="claude",
        max_tokens=10,
        tools=[tool],
        messages=[  # type: ignore[list-item]
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},  # type: ignore[misc]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "29C"}]},
        ],
    )
    assert msg.content[0].text == "warm"  # type: ignore[union-attr]

    fake.reply(tool_calls=[("weather", {"city": "Lima"})])
    with client.messages.stream(
        model="claude",
        max_tokens=10,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "w"}],
    ) as s:
        final = s.get_final_message()
    assert final.content[-1].input == {"city": "Lima"}  # type: ignore[union-attr]


def test_upstream_429_and_500_come_back_in_each_protocol(proxy: Api, fake: FakeProvider) -> None:
    fake.fault(Fault.rate_limit(retry_after=7, times=5))
    with pytest.raises(openai.RateLimitError) as rate:
        oai(proxy).chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert rate.value.response.headers["retry-after"] == "7"
    fake.reset()
    fake.fault(Fault.http(500, times=5))
    with pytest.raises(openai.APIStatusError) as failed:
        oai(proxy).chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502 and failed.value.body["type"] == "server_error"  # type: ignore[index]
    fake.reset()
    fake.fault(Fault.http(500, times=5))
    with pytest.raises(anthropic.APIStatusError) as failed_a:
        ant(proxy).messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert failed_a.value.status_code == 502 and failed_a.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    fake.reset()
    fake.fault(Fault.rate_limit(retry_after=1, times=5))
    with pytest.raises(anthropic.RateLimitError):
        ant(proxy).messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_a_stream_cut_off_upstream_is_an_error_inside_the_stream(proxy: Api, fake: FakeProvider) -> None:
    fake.reply("one two three four five six")
    fake.fault(Fault.truncate(after_chunks=2))
    with pytest.raises(openai.APIError, match=r"ended|cut|truncat|unavailable"):
        list(
            oai(proxy).chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    fake.reset()
    fake.reply("one two three four five six")
    fake.fault(Fault.truncate(after_chunks=2))
    with (
        pytest.raises(anthropic.APIStatusError),
        ant(proxy).messages.stream(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as s,
    ):
        "".join(s.text_stream)


def test_a_key_over_its_daily_budget_is_refused(proxy: Api, fake: FakeProvider) -> None:
    poor = proxy.key("proxy", budget_per_day=0.001)  # one call may cost 10 tokens x $1000/M = $0.01
    with pytest.raises(openai.RateLimitError) as refused:
        oai(proxy, poor).chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    body: Any = refused.value.body
    assert body["code"] == "insufficient_quota" and "budget" in body["message"]
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert not [r for r in fake.requests if "chat" in r.path]


def test_proxy_auth_and_bad_input_in_protocol_shapes(proxy: Api) -> None:
    with pytest.raises(openai.AuthenticationError):
        oai(proxy, "crl_000000000000_" + "x" * 43).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.PermissionDeniedError, match="scope 'trigger'"):
        oai(proxy, proxy.key("trigger")).models.list()
    with pytest.raises(anthropic.AuthenticationError):
        ant(proxy, "nope").messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError, match="nosuch"):
        oai(proxy).chat.completions.create(model="nosuch/model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        ant(proxy).messages.create(model="claude", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    headers = {"Authorization": f"Bearer {proxy.key('proxy')}", "Content-Type": "application/json"}
    for path, body, words in [
        ("/v1/chat/completions", b"{nope", "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "fast", "messages": "hi"}', "'messages' must be"),
        (
            "/v1/chat/completions",
            b'{"model": "fast", "messages": [{"role": "x", "content": "y"}]}',
            "role 'x'",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "fast", "messages": [{"role": "user"}], "temperature": "hot"}',
            "temperature",
        ),
        ("/v1/embeddings", b'{"model": "emb", "input": []}', "'input' must be"),
        ("/v1/chat/completions", b"[" + b"1," * 600_000 + b"1]", "larger than the limit"),
    ]:
        r = httpx.post(proxy.url + path, content=body, headers=headers, timeout=30)
        assert 400 <= r.status_code < 500 and words in r.json()["error"]["message"], r.text
        assert r.json()["error"]["type"] in ("invalid_request_error",)
    r = httpx.post(
        proxy.url + "/v1/messages", content=b'{"model": "claude"}', headers={**headers, "x-api-key": "bad"}
    )
    assert r.status_code == 400 or r.status_code == 401


def test_a_model_without_a_price_never_passes_a_budget(
    proxy: Api, fake: FakeProvider, api_factory: Callable[..., Api]
) -> None:
    key = proxy.key("proxy", budget_per_day=5.0)
    hi: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="no known price") as refused:
        oai(proxy, key).chat.completions.create(model="up/unpriced-xyz", max_tokens=100_000, messages=hi)
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="no known price"):
        list(oai(proxy, key).chat.completions.create(model="up/unpriced-xyz", messages=hi, stream=True))
    with pytest.raises(anthropic.BadRequestError, match="no known price"):
        ant(proxy, key).messages.create(model="ant/unpriced-xyz", max_tokens=10_000, messages=hi)
    with pytest.raises(openai.BadRequestError, match="no known price"):
        oai(proxy, key).embeddings.create(model="up/unpriced-embedder", input="hi")
    assert fake.requests == []
    assert oai(proxy).chat.completions.create(model="up/unpriced-xyz", messages=hi).choices

    up = {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}
    strict = api_factory({"models": {"providers": {"up": up}, "strict_prices": True}}, workers=0)
    with pytest.raises(openai.BadRequestError, match="strict_prices"):
        oai(strict).chat.completions.create(model="up/unpriced-xyz", messages=hi)


def test_the_proxy_reaches_only_models_the_configuration_offers(
    proxy: Api, fake: FakeProvider, api_factory: Callable[..., Api]
) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    # Undeclared providers: made up, built-in with the server's own keys, built-in local ports.
    for model in ("fake/unpriced-xyz", "openai/gpt-4o-mini", "vllm/x", "llamacpp/x", "ollama/x"):
        with pytest.raises(openai.NotFoundError, match="not offered") as refused:
            oai(proxy).chat.completions.create(model=model, messages=hi)
        assert refused.value.body["code"] == "model_not_found"  # type: ignore[index]
        assert "127.0.0.1" not in refused.value.response.text and "fast" in refused.value.response.text
        with pytest.raises(anthropic.NotFoundError, match="not offered"):
            ant(proxy).messages.create(model=model, max_tokens=5, messages=hi)
        with pytest.raises(openai.NotFoundError, match="not offered"):
            oai(proxy).embeddings.create(model=model, input="hi")
    assert fake.requests == []
    fake.reply("from a declared provider")
    reply = oai(proxy).chat.completions.create(model="up/any-model", messages=hi)
    assert reply.choices[0].message.content == "from a declared provider"

    bare = api_factory(workers=0)  # no [models] at all: the local tier is the configuration
    assert [m.id for m in oai(bare).models.list()] == ["local"]
    assert bare.app.models.offers("local") and not bare.app.models.offers("local/other")


def test_bodies_no_json_reader_handles_are_a_400_in_each_protocol(
    proxy: Api, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {proxy.key('proxy')}", "Content-Type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000
    huge_int = b'{"model": "fast", "max_tokens": ' + b"9" * 5000 + b', "messages": []}'
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings"):
        for body, words in ((deep, "nested more than"), (huge_int, "not valid JSON")):
            r = httpx.post(proxy.url + path, content=body, headers=headers, timeout=30)
            assert r.status_code == 400 and words in r.text, (path, r.text)
            error = r.json()["error"]
            if path == "/v1/messages":
                assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"
            else:
                assert error["type"] == "invalid_request_error" and "param" in error
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 100_000}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]}]
    r = httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "fast", "messages": messages},
        headers=headers,
        timeout=30,
    )  # JSON inside the JSON: a tool call's arguments
    assert r.status_code == 400 and "messages[1]" in r.json()["error"]["message"], r.text
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
