"""Each wire format end to end against the fake provider: replies, streams, tools, embeddings, errors."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from crewline.errors import (
    AuthError,
    BadRequest,
    ContentPolicy,
    ContextTooLong,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
)
from crewline.models import ImagePart, Tool, ToolCall, assistant, system, tool_result, user
from crewline.testing import FakeProvider, Fault

from .conftest import FORMATS

LOOKUP = Tool("lookup", "Find an order", {"type": "object", "properties": {"id": {"type": "integer"}}})


class Triage(pydantic.BaseModel):
    label: str
    urgent: bool


@pytest.mark.parametrize("fmt", FORMATS)
async def test_complete_text_and_usage(fmt: str, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    reply = await gw.complete(f"{fmt}/m", [system("be brief"), user("hello there")])
    assert reply.text == "echo: hello there"
    assert reply.finish_reason == "stop"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert (reply.provider, reply.deployment) == (fmt, f"{fmt}/m")
    seen = fake.requests[-1]
    assert seen.format == {"responses": "openai-responses"}.get(fmt, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_stream_assembles_reply_and_records_ttft(
    fmt: str, fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway()

    async def go() -> Any:
        stream = gw.stream(f"{fmt}/m", "stream this please")
        pieces = [c.text async for c in stream]
        return pieces, stream.response

    pieces, reply = await go()
    assert len([p for p in pieces if p]) > 1
    assert reply.text == "echo: stream this please"
    assert reply.ttft_ms is not None and reply.usage.output_tokens > 0


@pytest.mark.parametrize("fmt", FORMATS)
async def test_replies_and_streams_read_to_the_end_reuse_one_connection(fmt: str, make_gateway: Any) -> None:
    # A stream left unread after its terminal event would close its connection: with TLS to a real
    # provider that is a new handshake per call.
    gw = make_gateway()
    for _ in range(3):
        await gw.complete(f"{fmt}/m", "hello")
        assert [c async for c in gw.stream(f"{fmt}/m", "stream this please")]
    assert gw._client is not None and gw._client.opened == 1


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_calls_round_trip(fmt: str, streamed: bool, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    fake.reply(tool_calls=[("lookup", {"id": 7})])

    async def go() -> Any:
        if not streamed:
            return await gw.complete(f"{fmt}/m", "where is order 7?", tools=[LOOKUP])
        stream = gw.stream(f"{fmt}/m", "where is order 7?", tools=[LOOKUP])
        await stream.text()
        return stream.response

    reply = await go()
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("lookup", {"id": 7})]
    assert reply.finish_reason == "tool_calls"
    # the conversation continues with the tool result in the provider's own shape
    call = reply.tool_calls[0]
    follow = [user("where is order 7?"), assistant("", [call]), tool_result(call, {"status": "shipped"})]
    again = await gw.complete(f"{fmt}/m", follow, tools=[LOOKUP])
    assert again.text.startswith("echo:")


async def test_sampling_settings_travel_under_each_formats_names(
    fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway()
    for fmt in FORMATS:
        await gw.complete(
            f"{fmt}/m", "hi", max_tokens=7, temperature=0.5, top_p=0.9, stop=["END"], cache=False
        )
    oa, an, ge, ol, rs = (r.body for r in fake.requests[-5:])
    # OpenAI's current name for it; `max_tokens_field = "max_tokens"` in a provider's options for older servers
    assert (oa["max_completion_tokens"], oa["temperature"], oa["top_p"], oa["stop"]) == (7, 0.5, 0.9, ["END"])
    assert (an["max_tokens"], an["temperature"], an["top_p"], an["stop_sequences"]) == (7, 0.5, 0.9, ["END"])
    assert ge["generationConfig"] == {
        "maxOutputTokens": 7,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert ol["options"] == {"num_predict": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["END"]}
    assert (rs["max_output_tokens"], rs["temperature"], rs["top_p"]) == (7, 0.5, 0.9) and "stop" not in rs


async def test_wire_shapes_of_tools_and_images(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    image = ImagePart.from_bytes(b"\x89PNG", "image/png")
    call = ToolCall("c1", "lookup", {"id": 1})
    msgs = [system("sys"), user([image]), assistant("", [call]), tool_result(call, "ok")]
    for fmt in FORMATS:
        await gw.complete(f"{fmt}/m", msgs, tools=[LOOKUP], tool_choice="lookup")
    oa, an, ge, ol, rs = (r.body for r in fake.requests[-5:])
    assert oa["tools"][0]["function"]["name"] == "lookup"
    assert oa["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert oa["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert oa["messages"][3] == {"role": "tool", "content": "ok", "tool_call_id": "c1"}
    assert an["system"] == "sys" and an["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert an["messages"][1]["content"][0]["type"] == "tool_use"
    assert an["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "c1", "content": "ok"}
    assert ge["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert ge["contents"][0]["parts"][0]["inlineData"]["mimeType"] == "image/png"
    assert ge["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["lookup"]}
    assert ol["messages"][1]["images"] and ol["stream"] is False
    assert ol["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"id": 1}
    assert rs["instructions"] == "sys" and rs["store"] is False
    assert rs["input"][0]["content"][0]["type"] == "input_image"
    assert rs["input"][1] == {
        "type": "function_call",
        "call_id": "c1",
        "name": "lookup",
        "arguments": '{"id": 1}',
    }
    assert rs["input"][2] == {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    assert rs["tool_choice"] == {"type": "function", "name": "lookup"} and rs["tools"][0]["name"] == "lookup"


async def test_keys_travel_in_each_formats_header(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    for fmt in FORMATS:
        await gw.complete(f"{fmt}/m", "hi")
    oa, an, ge, ol, rs = (r.headers for r in fake.requests[-5:])
    assert oa["authorization"] == "Bearer sk-test"
    assert an["x-api-key"] == "sk-test" and an["anthropic-version"]
    assert ge["x-goog-api-key"] == "sk-test" and "key=" not in fake.requests[-3].query
    assert rs["authorization"] == "Bearer sk-test"
    assert ol["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_structured_output_uses_native_mode(fmt: str, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    fake.reply(json={"label": "billing", "urgent": True})
    reply = await gw.complete(f"{fmt}/m", "triage: my card was charged twice", output=Triage)
    assert reply.output == Triage(label="billing", urgent=True)
    body = fake.requests[-1].body
    schema_at = {
        "openai": lambda b: b["response_format"]["json_schema"]["schema"],
        "anthropic": lambda b: b["tools"][-1]["input_schema"],
        "gemini": lambda b: b["generationConfig"]["responseJsonSchema"],
        "ollama": lambda b: b["format"],
        "responses": lambda b: b["text"]["format"]["schema"],
    }[fmt]
    assert schema_at(body)["properties"]["label"]["type"] == "string"


@pytest.mark.parametrize("fmt", ["openai", "gemini", "ollama"])
async def test_embeddings(fmt: str, make_gateway: Any) -> None:
    gw = make_gateway()
    out = await gw.embed(["alpha", "beta", "alpha"], f"{fmt}/embed")
    assert len(out.vectors) == 3 and out.vectors[0] == out.vectors[2] != out.vectors[1]


async def test_embeddings_unsupported_by_anthropic(make_gateway: Any) -> None:
    with pytest.raises(BadRequest, match="no embeddings"):
        await make_gateway().embed("x", "anthropic/m")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (401, "invalid api key", AuthError),
        (400, "This model's maximum context length is 8192 tokens", ContextTooLong),
        (400, "unsupported parameter foo", BadRequest),
        (400, "blocked by the content policy", ContentPolicy),
    ],
)
async def test_error_statuses_map_to_the_tree(
    fmt: str, status: int, message: str, error: type, fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway()
    fake.fault(Fault.http(status, message))
    with pytest.raises(error) as info:
        await gw.complete(f"{fmt}/m", "hi")
    assert info.value.provider == fmt and not info.value.retryable


@pytest.mark.parametrize("fmt", FORMATS)
async def test_rate_limit_carries_retry_after(fmt: str, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.rate_limit(retry_after=7))
    with pytest.raises(RateLimited) as info:
        await gw.complete(f"{fmt}/m", "hi")
    assert info.value.retry_after == 7 and info.value.retryable


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_retryable_unavailable(
    fmt: str, status: int, fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.http(status, "overloaded"))
    with pytest.raises(ProviderUnavailable) as info:
        await gw.complete(f"{fmt}/m", "hi")
    assert info.value.retryable and info.value.status == status


@pytest.mark.parametrize("fmt", FORMATS)
async def test_malformed_json_is_a_typed_error(fmt: str, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.malformed())
    with pytest.raises(ProviderUnavailable, match="malformed JSON"):
        await gw.complete(f"{fmt}/m", "hi")


@pytest.mark.parametrize("fmt", FORMATS)
async def test_malformed_stream_event_is_a_typed_error(
    fmt: str, fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.malformed())
    with pytest.raises(ProviderUnavailable, match="malformed JSON"):
        await gw.stream(f"{fmt}/m", "a longer reply to stream").text()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("hard", [True, False])
async def test_stream_cut_off_midway_is_never_a_silent_success(
    fmt: str, hard: bool, fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.truncate(after_chunks=2, hard=hard))
    with pytest.raises(ProviderUnavailable, match="stream"):
        await gw.stream(f"{fmt}/m", "a longer reply to stream").text()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_truncated_body_is_a_typed_error(fmt: str, fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.truncate())
    with pytest.raises(ProviderUnavailable):
        await gw.complete(f"{fmt}/m", "hi")


async def test_timeout_is_a_typed_retryable_error(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "retry": {"attempts": 1},
            "providers": {
                "slow": {
                    "format": "openai",
                    "base_url": fake.url + "/v1",
                    "api_key_env": "FAKE_KEY",
                    "timeout": "200ms",
                }
            },
        }
    )
    fake.fault(Fault.timeout(seconds=5))
    with pytest.raises(ModelTimeout) as info:
        await gw.complete("slow/m", "hi")
    assert info.value.retryable


async def test_disconnect_without_reply(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"retry": {"attempts": 1}})
    fake.fault(Fault.disconnect())
    with pytest.raises(ProviderUnavailable):
        await gw.complete("openai/m", "hi")


async def test_reply_missing_fields_is_a_typed_error(fake: FakeProvider, make_gateway: Any) -> None:
    from crewline.models.providers.openai import OpenAIAdapter

    gw = make_gateway()
    adapter = gw.adapter("openai")
    assert isinstance(adapter, OpenAIAdapter)
    with pytest.raises(ProviderUnavailable, match="missing fields"):
        await _complete_with_body(adapter, {"id": "x", "choices": []})


async def _complete_with_body(adapter: Any, body: dict[str, Any]) -> Any:
    async def fake_post(path: str, payload: Any, params: Any = None) -> Any:
        return body

    adapter.post_json = fake_post
    from crewline.models.types import ModelRequest
    from crewline.models.types import user as u

    return await adapter.complete(ModelRequest("m", (u("hi"),)), "m")


async def test_openai_gets_max_completion_tokens_other_servers_max_tokens(
    fake: FakeProvider, make_gateway: Any
) -> None:
    gw = make_gateway({"providers": {"vllm": {"base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}}})
    await gw.complete("openai/m", "hi", max_tokens=42)
    await gw.complete("vllm/m", "hi", max_tokens=42)
    first, second = (r.body for r in fake.requests[-2:])
    assert first["max_completion_tokens"] == 42 and "max_tokens" not in first
    assert second["max_tokens"] == 42


async def test_huge_reply_is_refused(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway(
        {
            "retry": {"attempts": 1},
            "providers": {
                "tiny": {
                    "format": "openai",
                    "base_url": fake.url + "/v1",
                    "api_key_env": "FAKE_KEY",
                    "options": {"max_body_bytes": 2000},
                }
            },
        }
    )
    fake.reply("word " * 1000)
    with pytest.raises(ProviderUnavailable, match="over the 2000 byte limit"):
        await gw.complete("tiny/m", "hi")


async def test_stream_without_usage_is_estimated_not_free(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"prices": {"openai/m": {"input": 1, "output": 1}}})
    stream = gw.stream("openai/m", "count me", extra={"stream_options": {"include_usage": False}})
    await stream.text()
    assert fake.requests[-1].body["stream_options"] == {"include_usage": False}
    assert stream.response.usage.output_tokens > 0 and stream.response.cost > 0


async def test_gemini_tools_with_references_use_full_json_schema(
    fake: FakeProvider, make_gateway: Any
) -> None:
    class Address(pydantic.BaseModel):
        city: str

    class Ship(pydantic.BaseModel):
        to: Address

    gw = make_gateway()
    await gw.complete("gemini/m", "hi", tools=[Tool("ship", "Ship it", Ship.model_json_schema()), LOOKUP])
    ship, lookup = fake.requests[-1].body["tools"][0]["functionDeclarations"]
    assert "$defs" in ship["parametersJsonSchema"] and "parameters" not in ship
    assert lookup["parameters"]["properties"]["id"]["type"] == "integer"
