"""The fake provider cross-checked against the official ``openai`` and ``anthropic`` SDKs.

If the fake drifts from the real wire formats, the SDKs' own parsers fail here.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import anthropic
import httpx
import openai
import pytest

from crewline.testing import FakeProvider, Fault, fake_vector


@pytest.fixture
def oa(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def an(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-test", max_retries=0)


def test_openai_chat_completion(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.reply("hello from the fake", input_tokens=11, output_tokens=4)
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hello from the fake"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 4)  # type: ignore[union-attr]


def test_openai_tool_calls_and_streaming(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.reply(tool_calls=[("lookup", {"id": 7}), ("notify", {"to": "ops"})])
    r = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    calls = r.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("lookup", '{"id": 7}'),
        ("notify", '{"to": "ops"}'),
    ]
    assert r.choices[0].finish_reason == "tool_calls"
    fake.reply("streamed words here")
    stream = oa.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed words here"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_streamed_tool_call_accumulates(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.reply(tool_calls=[("lookup", {"id": 7, "why": "because"})])
    args = ""
    with oa.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    args = final.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index, union-attr]
    assert args == '{"id": 7, "why": "because"}'


def test_openai_structured_output_parse(oa: openai.OpenAI) -> None:
    import pydantic

    class Triage(pydantic.BaseModel):
        label: str
        urgent: bool

    r = oa.chat.completions.parse(
        model="m", messages=[{"role": "user", "content": "x"}], response_format=Triage
    )
    assert r.choices[0].message.parsed == Triage(label="x", urgent=False)


def test_openai_embeddings_base64_and_float(oa: openai.OpenAI) -> None:
    e = oa.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])  # SDK asks for base64
    assert [round(x, 5) for x in e.data[0].embedding] == [round(x, 5) for x in fake_vector("alpha")]
    f = oa.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert f.data[0].embedding == fake_vector("alpha")
    raw = httpx.post(
        str(oa.base_url) + "embeddings",
        json={"model": "m", "input": "alpha", "encoding_format": "base64"},
        headers={"authorization": "Bearer sk-test"},
    ).json()
    decoded = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert [round(x, 5) for x in decoded] == [round(x, 5) for x in fake_vector("alpha")]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.rate_limit(retry_after=3), openai.RateLimitError),
        (Fault.http(500, "boom"), openai.InternalServerError),
        (Fault.http(401, "bad key"), openai.AuthenticationError),
        (Fault.http(400, "This model's maximum context length is 10 tokens"), openai.BadRequestError),
    ],
)
def test_openai_errors(oa: openai.OpenAI, fake: FakeProvider, fault: Fault, error: type[Exception]) -> None:
    fake.fault(fault)
    with pytest.raises(error) as info:
        oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    if fault.retry_after is not None:
        assert info.value.response.headers["retry-after"] == "3"  # type: ignore[attr-defined]
    if "context" in fault.message:
        assert info.value.code == "context_length_exceeded"  # type: ignore[attr-defined]


def test_openai_truncated_stream_fails_in_the_sdk(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.fault(Fault.truncate(after_chunks=2))
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        list(
            oa.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "a b c d"}], stream=True
            )
        )


def test_anthropic_message(an: anthropic.Anthropic, fake: FakeProvider) -> None:
    fake.reply("hi from claude", input_tokens=9, output_tokens=3)
    m = an.messages.create(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].type == "text" and m.content[0].text == "hi from claude"
    assert m.stop_reason == "end_turn" and (m.usage.input_tokens, m.usage.output_tokens) == (9, 3)


def test_anthropic_stream_with_tool_use(an: anthropic.Anthropic, fake: FakeProvider) -> None:
    fake.reply("let me look", tool_calls=[("lookup", {"id": 7})])
    with an.messages.stream(model="c", max_tokens=50, messages=[{"role": "user", "content": "x"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "let me look"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert (tool.name, tool.input) == ("lookup", {"id": 7})  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_anthropic_forced_tool_structured(an: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    m = an.messages.create(
        model="c",
        max_tokens=50,
        messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "final_output", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "final_output"},
    )
    assert m.content[0].type == "tool_use" and m.content[0].input == {"label": "x"}


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.rate_limit(retry_after=2), anthropic.RateLimitError),
        (Fault.http(529, "overloaded"), anthropic.OverloadedError),
        (Fault.http(401, "bad key"), anthropic.AuthenticationError),
        (Fault.http(400, "prompt is too long"), anthropic.BadRequestError),
    ],
)
def test_anthropic_errors(
    an: anthropic.Anthropic, fake: FakeProvider, fault: Fault, error: type[Exception]
) -> None:
    fake.fault(fault)
    with pytest.raises(error):
        an.messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_fake_checks_the_api_key(fake: FakeProvider) -> None:
    bad = openai.OpenAI(base_url=fake.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_fault_scoped_to_a_path(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.fault(Fault.http(500, "embeddings down", path="/embeddings", times=2))
    assert oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
    with pytest.raises(openai.InternalServerError):
        oa.embeddings.create(model="e", input="x")
    with pytest.raises(openai.InternalServerError):
        oa.embeddings.create(model="e", input="x")
    assert oa.embeddings.create(model="e", input="x").data


def test_fixed_latency_and_request_log(fake: FakeProvider) -> None:
    slow = FakeProvider(latency=0.01).start()
    try:
        client = openai.OpenAI(base_url=slow.url + "/v1", api_key="k", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "logged"}])
        assert slow.requests[0].path == "/v1/chat/completions"
        assert slow.requests[0].body["messages"][0]["content"] == "logged"
    finally:
        slow.stop()


def test_openai_responses_api(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.reply("hello via responses", input_tokens=7, output_tokens=3)
    r = oa.responses.create(model="gpt-5", input="hi")
    assert r.output_text == "hello via responses" and r.status == "completed"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (7, 3)  # type: ignore[union-attr]
    fake.reply(tool_calls=[("lookup", {"id": 7})])
    calls = [o for o in oa.responses.create(model="gpt-5", input="x").output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("lookup", '{"id": 7}')]  # type: ignore[union-attr]
    fake.reply("streamed via responses")
    events = list(oa.responses.create(model="gpt-5", input="x", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == "streamed via responses" and events[-1].type == "response.completed"
    with oa.responses.stream(model="gpt-5", input="x") as stream:
        for _event in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text.startswith("echo:")


def test_openai_responses_stream_helper_with_function_call(oa: openai.OpenAI, fake: FakeProvider) -> None:
    fake.reply("checking", tool_calls=[("lookup", {"id": 7})])
    with oa.responses.stream(model="gpt-5", input="x") as stream:
        for _event in stream:
            pass
        final = stream.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert (call.name, call.arguments) == ("lookup", '{"id": 7}')  # type: ignore[union-attr]
    assert final.output_text == "checking"


def test_a_fault_mix_fails_a_share_of_requests_and_answered_lists_the_rest(
    oa: openai.OpenAI, fake: FakeProvider
) -> None:
    fake.fault_mix(0.5, [Fault.http(500), Fault.rate_limit(retry_after=1), Fault.truncate()], seed=7)
    outcomes = []
    for i in range(60):
        try:
            messages: list[Any] = [{"role": "user", "content": f"n{i}"}]
            if i % 2:
                list(oa.chat.completions.create(model="m", messages=messages, stream=True))
            else:
                oa.chat.completions.create(model="m", messages=messages)
            outcomes.append(True)
        except (openai.APIError, httpx.HTTPError):
            outcomes.append(False)
    assert 15 <= outcomes.count(False) <= 45
    assert len(fake.requests) == 60
    answered = [r.body["messages"][0]["content"] for r in fake.answered]
    # a stream cut off midway is not answered, even where the SDK saw its first chunks
    assert len(answered) <= outcomes.count(True)
    assert len(answered) == len(set(answered)) >= 15
    fake.fault_mix(0, [])
    oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "calm"}])
    assert fake.answered[-1].body["messages"][0]["content"] == "calm"
    with pytest.raises(ValueError, match="at least one fault"):
        fake.fault_mix(0.3, [])
